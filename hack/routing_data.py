"""Reduces RouteLLM's published per-question results to what the model router needs:
``bench/data/routellm-mmlu-gsm8k.jsonl.gz``, one line per question ``{"task", "prompt", "small", "large"}``
where ``small``/``large`` say whether Mixtral-8x7B-Instruct and GPT-4-1106-preview answered it correctly.

Source: lm-sys/RouteLLM (Apache-2.0), ``routellm/evals/mmlu/responses/*.csv`` and
``routellm/evals/gsm8k/gsm8k_responses.csv``, minus the prompts RouteLLM lists as contaminated (its own
``contaminated_prompts.jsonl``, as its benchmarks drop them). The responses themselves are not kept. Prompts
are cut to ``MAX_PROMPT_CHARS`` (the encoder reads at most 256 word pieces).

    python hack/routing_data.py PATH_TO_ROUTELLM_CHECKOUT [--out FILE]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from snapshot import list_files, read_text

MAX_PROMPT_CHARS = 1200
SMALL, LARGE = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
OUT = Path(__file__).resolve().parent.parent / "bench/data/routellm-mmlu-gsm8k.jsonl.gz"


def _contaminated(repo: Path, path: str) -> set[str]:
    return {json.loads(line)["eval_prompt"] for line in read_text(repo, path).splitlines() if line.strip()}


def rows(repo: Path) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    skip = _contaminated(repo, "routellm/evals/mmlu/contaminated_prompts.jsonl")
    for path in list_files(repo, "routellm/evals/mmlu/responses", ".csv"):
        task = "mmlu/" + Path(path).stem.removeprefix("mmlu_")
        for r in csv.DictReader(io.StringIO(read_text(repo, path))):
            if r["prompt"] in skip:
                continue
            out.append(_row(task, r))
    skip = _contaminated(repo, "routellm/evals/gsm8k/contaminated_prompts.jsonl")
    for r in csv.DictReader(io.StringIO(read_text(repo, "routellm/evals/gsm8k/gsm8k_responses.csv"))):
        if r["prompt"] not in skip:
            out.append(_row("gsm8k", r))
    return out


def _row(task: str, r: dict[str, str]) -> dict[str, object]:
    return {
        "task": task,
        "prompt": r["prompt"][:MAX_PROMPT_CHARS],
        "small": r[SMALL] == "True",
        "large": r[LARGE] == "True",
    }


def write(data: list[dict[str, object]], out: Path) -> None:
    """The rows as gzipped JSON lines; the same rows give the same bytes, whatever the file is called (no time
    stamp and no file name in the gzip header)."""
    buf = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in data)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
        f.write(buf.encode())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("repo", type=Path, help="a checkout or bare snapshot of lm-sys/RouteLLM")
    ap.add_argument("--out", type=Path, default=OUT, help=f"where to write (default {OUT})")
    args = ap.parse_args(argv)
    try:
        data = rows(args.repo)
    except (OSError, subprocess.CalledProcessError, KeyError) as exc:
        # KeyError: a CSV without the two models' columns, i.e. not RouteLLM's results.
        print(
            f"routing_data.py: error: {args.repo}: not RouteLLM's evaluation results ({exc!r})",
            file=sys.stderr,
        )
        return 2
    if not data:
        print(f"routing_data.py: error: {args.repo}: no results found under routellm/evals", file=sys.stderr)
        return 2
    write(data, args.out)
    print(f"{len(data)} questions -> {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
