"""Reads a public repository's files from a checkout of it, or from a bare snapshot (a git directory without a
work tree, as ``fetch`` gives), for the hack/ scripts that turn third-party data into bench/data: one file's
text (``read_text``), or the names of a folder's files (``list_files``)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _git(repo: Path, *args: str) -> str:
    """A git command on HEAD of the repository's git directory (``repo/.git``, or ``repo`` itself when bare)."""
    git_dir = repo / ".git" if (repo / ".git").is_dir() else repo
    return subprocess.run(
        ["git", "--git-dir", str(git_dir), *args], check=True, capture_output=True, text=True
    ).stdout


def read_text(repo: Path, path: str) -> str:
    """``path`` (relative to the repository's root) from the work tree when there is one, else from HEAD of
    the git directory. Raises OSError or CalledProcessError."""
    f = repo / path
    if f.is_file():
        return f.read_text(encoding="utf-8")
    return _git(repo, "show", f"HEAD:{path}")


def list_files(repo: Path, folder: str, suffix: str) -> list[str]:
    """The paths (relative to the repository's root, sorted) of the files directly in ``folder`` whose names
    end with ``suffix``: from the work tree when it has the folder, else from HEAD of the git directory."""
    d = repo / folder
    if d.is_dir():
        return sorted(
            str(p.relative_to(repo)) for p in d.iterdir() if p.is_file() and p.name.endswith(suffix)
        )
    entries = (
        line.split("\t", 1) for line in _git(repo, "ls-tree", "HEAD", folder.rstrip("/") + "/").splitlines()
    )
    return sorted(path for meta, path in entries if meta.split()[1] == "blob" and path.endswith(suffix))
