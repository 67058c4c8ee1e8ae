"""Turns the Medical Question Pairs dataset (MQP) into the pairs format of ``bench/cache.py --pairs``, split into
the part used for tuning and the part held out (a fixed 30 % of the patient questions, by a hash of the text).

MQP (McCreery et al., "Effective Transfer Learning for Identifying Similar Questions: Matching User Questions to
COVID-19 FAQs", KDD 2020; repository curai/medical-question-pair-dataset): 1,524 real patient questions from
HealthTap, each with a rewrite by a doctor that keeps the intent ("change medical details that would not impact
your response") and a related question, written with the same key words, "for which the answer to the
original question would be WRONG OR IRRELEVANT". So every question brings one paraphrase and one hard
negative, and the negatives are what a semantic cache must not serve. The repository states no licence, so
the data is not copied into this one: this script reads a checkout (or a bare snapshot) of it.

    git clone https://github.com/curai/medical-question-pair-dataset /tmp/mqp
    python hack/mqp_pairs.py /tmp/mqp --out /tmp/mqp      # writes /tmp/mqp-tune.json and /tmp/mqp-heldout.json
    python bench/cache.py --pairs /tmp/mqp-heldout.json --no-near-misses --skip-servers

Each output line of the pairs file is ``{"origin", "similar"}`` (a paraphrase) or the same with
``"label": "negative"``; both rows of a patient question land in the same part.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from snapshot import read_text

HOLDOUT_PERCENT = 30


def held_out(question: str) -> bool:
    return hashlib.blake2b(question.encode(), digest_size=8).digest()[0] % 100 < HOLDOUT_PERCENT


def read_csv(repo: Path) -> str:
    return read_text(repo, "mqp.csv")


def pairs(text: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(tuning part, held-out part); each row ``dr_id, question_1, question_2, label`` (1: same intent)."""
    tune: list[dict[str, str]] = []
    held: list[dict[str, str]] = []
    for n, row in enumerate(csv.reader(io.StringIO(text)), 1):
        if len(row) != 4 or row[3] not in ("0", "1"):
            raise ValueError(
                f"mqp.csv line {n}: expected dr_id,question_1,question_2,label(0|1), got {row!r}"
            )
        _, origin, similar, label = row
        pair = {"origin": origin, "similar": similar}
        if label == "0":
            pair["label"] = "negative"
        (held if held_out(origin) else tune).append(pair)
    return tune, held


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "repo", type=Path, help="a checkout or bare snapshot of curai/medical-question-pair-dataset"
    )
    ap.add_argument(
        "--out", type=Path, required=True, help="prefix: writes PREFIX-tune.json, PREFIX-heldout.json"
    )
    args = ap.parse_args()
    try:
        text = read_csv(args.repo)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"mqp_pairs.py: error: {args.repo}: no mqp.csv there ({exc})", file=sys.stderr)
        return 2
    tune, held = pairs(text)
    for part, rows in (("tune", tune), ("heldout", held)):
        path = Path(f"{args.out}-{part}.json")
        path.write_text(json.dumps(rows, ensure_ascii=False, indent=0))
        negatives = sum(1 for r in rows if r.get("label") == "negative")
        print(
            json.dumps(
                {"part": part, "file": str(path), "pairs": len(rows) - negatives, "negatives": negatives}
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
