"""hack/snapshot.py: a repository's files read alike from a checkout, from a checkout whose work tree lacks
them, and from a bare snapshot (what ``fetch`` gives)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import hack_script

snapshot = hack_script("snapshot")

FILES = {
    "data/b.csv": "b,1\n",
    "data/a.csv": "a,ü\n",
    "data/notes.txt": "not a csv\n",
    "data/deeper/c.csv": "in a subfolder\n",
    "data/odd.csv/d.txt": "a folder named like a csv file\n",
    "top.csv": "outside the folder\n",
}


def _git(*args: str) -> None:
    subprocess.run(["git", *args], check=True, capture_output=True)


@pytest.fixture(params=["checkout", "checkout without work tree", "bare"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for name, text in FILES.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text, encoding="utf-8")
    _git("-C", str(src), "init", "-q")
    _git("-C", str(src), "add", "-A")
    _git("-C", str(src), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "data")
    if request.param == "checkout without work tree":
        shutil.rmtree(src / "data")
        return src
    if request.param == "bare":
        _git("clone", "-q", "--bare", str(src), str(tmp_path / "bare.git"))
        return tmp_path / "bare.git"
    return src


def test_list_files_names_the_folders_own_files_with_the_suffix(repo: Path) -> None:
    assert snapshot.list_files(repo, "data", ".csv") == ["data/a.csv", "data/b.csv"]
    assert snapshot.list_files(repo, "data/", ".txt") == ["data/notes.txt"]
    assert snapshot.list_files(repo, "data/deeper", ".csv") == ["data/deeper/c.csv"]


def test_read_text_gives_the_committed_text(repo: Path) -> None:
    for name in ("data/a.csv", "data/deeper/c.csv", "top.csv"):
        assert snapshot.read_text(repo, name) == FILES[name]


def test_a_missing_file_or_folder_raises(repo: Path) -> None:
    with pytest.raises((OSError, subprocess.CalledProcessError)):
        snapshot.read_text(repo, "data/missing.csv")
    assert snapshot.list_files(repo, "nowhere", ".csv") == []
