"""Reads one file of a public repository from a checkout of it, or from a bare snapshot (a git directory
without a work tree, as ``fetch`` gives), for the hack/ scripts that turn third-party data into bench/data."""

from __future__ import annotations

import subprocess
from pathlib import Path


def read_text(repo: Path, path: str) -> str:
    """``path`` (relative to the repository's root) from the work tree when there is one, else from HEAD of
    the git directory (``repo/.git``, or ``repo`` itself when bare). Raises OSError or CalledProcessError."""
    f = repo / path
    if f.is_file():
        return f.read_text(encoding="utf-8")
    git_dir = repo / ".git" if (repo / ".git").is_dir() else repo
    return subprocess.run(
        ["git", "--git-dir", str(git_dir), "show", f"HEAD:{path}"], check=True, capture_output=True, text=True
    ).stdout
