"""Checks a commit message (the pre-commit commit-msg hook): a subject of at most 72 characters starting with
one prefix (``gateway: ...``), a blank line, then a body with the why and the figures.

    python hack/commit_msg.py .git/COMMIT_EDITMSG    exit 0, or 1 with the problems on stderr
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SUBJECT_MAX = 72
PREFIX = re.compile(r"^[a-z][a-z0-9-]*(/[a-z0-9-]+)?: \S")


def problems(message: str) -> list[str]:
    lines = [ln for ln in message.splitlines() if not ln.startswith("#")]  # git's comment lines
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or not lines[0].strip():
        return ["the message is empty"]
    subject = lines[0]
    if subject.startswith(("Merge ", "Revert ", "fixup! ", "squash! ")):
        return []
    out = []
    if len(subject) > SUBJECT_MAX:
        out.append(f"the subject has {len(subject)} characters; at most {SUBJECT_MAX}")
    if not PREFIX.match(subject):
        out.append("the subject starts with one lower-case prefix naming the package, e.g. 'gateway: ...'")
    if len(lines) < 3 or lines[1].strip():
        out.append("a blank line, then a body with the why and the figures, follows the subject")
    elif not any(ln.strip() for ln in lines[2:]):
        out.append("the body is empty: say why, and the figures")
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: commit_msg.py MESSAGE_FILE", file=sys.stderr)
        return 2
    found = problems(Path(argv[1]).read_text())
    for p in found:
        print(f"commit message: {p}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
