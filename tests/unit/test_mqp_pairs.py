"""hack/mqp_pairs.py: the Medical Question Pairs CSV turned into bench/cache.py's pairs, tuning and held-out parts."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import ROOT, hack_script

SCRIPT = ROOT / "hack" / "mqp_pairs.py"


mqp = hack_script("mqp_pairs")
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), min_size=1)


def as_csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


@given(questions=st.lists(st.tuples(TEXT, TEXT, TEXT), min_size=1, max_size=30, unique_by=lambda q: q[0]))
def test_each_question_brings_its_paraphrase_and_negative_to_the_same_part(questions) -> None:
    rows = []
    for origin, same, other in questions:
        rows += [["1", origin, same, "1"], ["1", origin, other, "0"]]
    tune, held = mqp.pairs(as_csv(rows))
    assert len(tune) + len(held) == 2 * len(questions)
    for part, other_part in ((tune, held), (held, tune)):
        origins = {p["origin"] for p in part}
        assert not origins & {p["origin"] for p in other_part}  # no question is in both parts
        for p in part:
            assert mqp.held_out(p["origin"]) == (part is held)
    by_origin = {o: (s, n) for o, s, n in questions}
    for p in tune + held:
        same, other = by_origin[p["origin"]]
        assert p == (
            {"origin": p["origin"], "similar": other, "label": "negative"}
            if p.get("label")
            else {"origin": p["origin"], "similar": same}
        )


def test_a_malformed_row_names_its_line() -> None:
    with pytest.raises(ValueError, match="line 2"):
        mqp.pairs('1,"a?","b?",1\n1,"a?","c?",maybe\n')


def test_the_script_writes_both_parts_and_refuses_a_folder_without_the_csv(tmp_path) -> None:
    (tmp_path / "mqp.csv").write_text(as_csv([["1", f"q{i}?", f"p{i}?", str(i % 2)] for i in range(200)]))
    r = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), "--out", str(tmp_path / "mqp")],
        capture_output=True,
        text=True,
        check=True,
    )
    parts = [json.loads(line) for line in r.stdout.splitlines()]
    assert [p["part"] for p in parts] == ["tune", "heldout"]
    assert sum(p["pairs"] + p["negatives"] for p in parts) == 200
    held = json.loads((tmp_path / "mqp-heldout.json").read_text())
    assert 0 < len(held) < 200  # a fixed share held out (30 % of the questions by hash)
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "no mqp.csv there" in bad.stderr
