"""hack/routing_data.py: RouteLLM's per-question results reduced to the router's data file, and a clear exit 2
on anything that is not a RouteLLM checkout."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import hack_script

rd = hack_script("routing_data")

# No carriage returns: the files are read as text with universal newlines, and RouteLLM's have none.
prompts = st.lists(
    st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), min_size=1, max_size=40
    ),
    min_size=1,
    max_size=8,
)


def _csv(rows: list[tuple[str, bool, bool]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["prompt", rd.SMALL, rd.LARGE, "other"])
    for prompt, small, large in rows:
        w.writerow([prompt, str(small), str(large), "x"])
    return buf.getvalue()


def _checkout(
    root: Path, mmlu: dict[str, str], gsm8k: str, skip_mmlu: list[str], skip_gsm8k: list[str]
) -> Path:
    for name, text in mmlu.items():
        f = root / "routellm/evals/mmlu/responses" / f"mmlu_{name}.csv"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    (root / "routellm/evals/gsm8k").mkdir(parents=True, exist_ok=True)
    (root / "routellm/evals/gsm8k/gsm8k_responses.csv").write_text(gsm8k)
    for folder, skip in (("mmlu", skip_mmlu), ("gsm8k", skip_gsm8k)):
        (root / f"routellm/evals/{folder}/contaminated_prompts.jsonl").write_text(
            "".join(json.dumps({"eval_prompt": p}) + "\n" for p in skip)
        )
    return root


@settings(max_examples=40, deadline=None)
@given(prompts, prompts, st.data())
def test_rows_keep_every_uncontaminated_prompt_with_its_two_answers(
    tmp_path_factory: pytest.TempPathFactory, mmlu: list[str], gsm: list[str], data: st.DataObject
) -> None:
    answers = st.tuples(st.booleans(), st.booleans())
    m = [(p, *data.draw(answers)) for p in mmlu]
    g = [(p, *data.draw(answers)) for p in gsm]
    skip_m = data.draw(st.lists(st.sampled_from(mmlu), unique=True))
    skip_g = data.draw(st.lists(st.sampled_from(gsm), unique=True))
    repo = _checkout(tmp_path_factory.mktemp("routellm"), {"anatomy": _csv(m)}, _csv(g), skip_m, skip_g)
    got = rd.rows(repo)
    want = [
        {"task": "mmlu/anatomy", "prompt": p[: rd.MAX_PROMPT_CHARS], "small": s, "large": lg}
        for p, s, lg in m
        if p not in skip_m
    ] + [
        {"task": "gsm8k", "prompt": p[: rd.MAX_PROMPT_CHARS], "small": s, "large": lg}
        for p, s, lg in g
        if p not in skip_g
    ]
    assert got == want


def test_main_writes_the_same_bytes_twice(tmp_path: Path) -> None:
    repo = _checkout(
        tmp_path / "repo", {"law": _csv([("Q1", True, False)])}, _csv([("2+2?", False, True)]), [], []
    )
    # Two names: gzip's header would keep the file's name; the folders do not exist yet.
    a, b = tmp_path / "a" / "data.jsonl.gz", tmp_path / "b" / "other.jsonl.gz"
    assert rd.main([str(repo), "--out", str(a)]) == 0
    assert rd.main([str(repo), "--out", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    lines = [json.loads(x) for x in gzip.decompress(a.read_bytes()).decode().splitlines()]
    assert [x["task"] for x in lines] == ["mmlu/law", "gsm8k"]


def test_no_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        rd.main([])
    assert exc.value.code == 2
    assert "repo" in capsys.readouterr().err


def test_a_folder_that_is_not_routellm_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.jsonl.gz"
    assert rd.main([str(tmp_path), "--out", str(out)]) == 2
    assert str(tmp_path) in capsys.readouterr().err
    assert not out.exists()


def test_results_without_the_two_models_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = _checkout(tmp_path / "repo", {"law": "prompt,a,b\nQ,True,False\n"}, "prompt\n", [], [])
    out = tmp_path / "out.jsonl.gz"
    assert rd.main([str(repo), "--out", str(out)]) == 2
    assert "not RouteLLM" in capsys.readouterr().err
    assert not out.exists()
