"""Conformance with vLLM's own code, not our reading of it: the argument definitions of the tested release
(fetched by hack/vllm-source.sh: the wheel, no torch; a few source files kept under ~/.cache/llmfleet) decide
which spellings of a flag vLLM takes, and both our validations (pydantic, and the CRD's CEL rule on the real
API server) must refuse every spelling of an owned or breaking flag and no other flag."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmfleet.api import vllm_flags
from llmfleet.api.v1alpha1 import extra_arg_problem
from tests.conftest import EXAMPLES, ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def src() -> Path:
    out = subprocess.run(
        ["bash", str(ROOT / "hack" / "vllm-source.sh")], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def accepted(src: Path) -> dict[str, list[str]]:
    """dest → option strings, for every option of vllm serve."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "vllm_flags.py"), str(src)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_the_flag_table_is_generated_from_the_tested_vllm_release(src: Path) -> None:
    assert src.name == vllm_flags.VLLM_VERSION
    out = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "vllm_flags.py"), str(src), "--module"],
        capture_output=True,
        text=True,
        check=True,
    )
    committed = (ROOT / "operator" / "llmfleet" / "api" / "vllm_flags.py").read_text()
    assert out.stdout == committed, (
        "regenerate: python hack/vllm_flags.py $(bash hack/vllm-source.sh) --module"
    )


def test_every_flag_the_renderer_writes_is_one_vllm_serve_takes(accepted: dict[str, list[str]]) -> None:
    from llmfleet.api.load import parse_object
    from llmfleet.api.sizing import size
    from llmfleet.render import render_all

    options = {o for fs in accepted.values() for o in fs}
    for example in EXAMPLES:
        obj = parse_object(yaml.safe_load(example.read_text()))
        for m in render_all(obj, size(obj.spec)):
            if m["kind"] != "Deployment" or "-engine-" not in m["metadata"]["name"]:
                continue
            for arg in m["spec"]["template"]["spec"]["containers"][0]["args"]:
                assert arg.split("=", 1)[0] in options, (
                    f"{example.name}: vLLM {vllm_flags.VLLM_VERSION} has no {arg}"
                )


def spellings(option: str) -> list[str]:
    """Ways to write one option that vLLM's FlexibleArgumentParser (argparse, allow_abbrev) takes as it."""
    if not option.startswith("--"):
        return [option, f"{option}=1", f"{option}1"]  # -tp, -tp=1, -tp1
    body = option[2:]
    out = [option, f"{option}=1", f"--{body.replace('-', '_')}=1", f"{option}.key=1"]
    out += [
        f"--{body[:k]}" for k in range(max(1, len(body) - 4), len(body))
    ]  # prefixes: --tensor-parallel-si
    return out


def refused_by_the_api_server(cluster, args: list[str], namespace: str) -> list[bool]:
    """For each entry, whether a CR with only it in extraArgs is refused by the CRD's CEL rule (server dry-run)."""
    docs = []
    for i, arg in enumerate(args):
        docs.append(
            {
                "apiVersion": "llmfleet.io/v1alpha1",
                "kind": "LLMDeployment",
                "metadata": {"name": f"s-{i}", "namespace": namespace},
                "spec": {
                    "model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct"},
                    "engine": {"extraArgs": [arg]},
                },
            }
        )
    r = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs), check=False)
    return [
        f'"s-{i}"' in r.stderr and "none of the flags the operator owns" in r.stderr for i in range(len(args))
    ]


def test_every_spelling_of_an_owned_or_breaking_flag_is_refused_by_both_validations(
    cluster, namespace
) -> None:
    options = [o for fs in vllm_flags.OWNED.values() for o in fs if o.startswith("-")]
    options += [o for fs, _ in vllm_flags.BREAKING.values() for o in fs]
    args = [s for o in options for s in spellings(o)] + ["my-model", "64"]  # a bare word is vLLM's model_tag
    assert len(args) > 100
    let_through = [a for a in args if extra_arg_problem(a) is None]
    assert let_through == [], let_through
    server = refused_by_the_api_server(cluster, args, namespace)
    assert [a for a, refused in zip(args, server, strict=True) if not refused] == []


def test_no_other_vllm_flag_is_refused(cluster, namespace, accepted: dict[str, list[str]]) -> None:
    ours = {d for d in (*vllm_flags.OWNED, *vllm_flags.BREAKING)}
    owned = {o for fs in vllm_flags.OWNED.values() for o in fs} | {
        o for fs, _ in vllm_flags.BREAKING.values() for o in fs
    }
    others = sorted({o for d, fs in accepted.items() if d not in ours for o in fs if o.startswith("-")})
    # A flag argparse would read as an owned one by prefix is no other flag (none in this release).
    others = [
        o
        for o in others
        if not any(x.startswith(o) for x in owned if x.startswith("--") and o.startswith("--"))
    ]
    assert len(others) > 250
    args = [f"{o}=1" for o in others]
    assert [a for a in args if extra_arg_problem(a)] == []
    server = refused_by_the_api_server(cluster, args, namespace)
    assert [a for a, refused in zip(args, server, strict=True) if refused] == []


def test_engine_sim_exports_vllms_series_with_vllms_types_labels_and_buckets(src: Path) -> None:
    """Every vllm:* family engine-sim exports is one vLLM 0.33 defines (vllm/v1/metrics/loggers.py), with the same
    type, label names and, for the histograms, bucket bounds; and it exports every series llmfleet reads."""
    from prometheus_client.parser import text_string_to_metric_families

    from tests.integration.servers import engine

    out = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "vllm_metrics.py"), str(src)],
        capture_output=True,
        text=True,
        check=True,
    )
    vllm = json.loads(out.stdout)
    e = engine("m", 50.0)
    try:
        import httpx

        httpx.post(
            e.url + "/v1/chat/completions",
            json={"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "metrics"}]},
            timeout=30,
        )
        text = httpx.get(e.url + "/metrics").text
    finally:
        e.stop()
    ours = {}
    for fam in text_string_to_metric_families(text):
        if not fam.name.startswith("vllm:") or fam.name.endswith("_created"):  # the client's own timestamps
            continue
        name = fam.name + ("_total" if fam.type == "counter" else "")
        sample = next(s for s in fam.samples if not s.name.endswith(("_created", "_sum", "_count")))
        labels = sorted(k for k in sample.labels if k != "le")
        buckets = sorted({float(s.labels["le"]) for s in fam.samples if "le" in s.labels} - {float("inf")})
        ours[name] = (fam.type, labels, buckets or None)
    read = {
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
        "vllm:time_to_first_token_seconds",
        "vllm:prompt_tokens_total",
        "vllm:prompt_tokens_by_source_total",
        "vllm:generation_tokens_total",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:request_success_total",
    }  # what the autoscaler, `llmfleet prefix-cache` and the tests read
    assert read <= ours.keys(), read - ours.keys()
    for name, (kind, labels, buckets) in ours.items():
        assert name in vllm, f"vLLM {vllm_flags.VLLM_VERSION} has no {name}"
        assert kind == vllm[name]["type"] and labels == sorted(vllm[name]["labels"]), (
            name,
            kind,
            labels,
            vllm[name],
        )
        if vllm[name]["buckets"] is not None:
            assert buckets == vllm[name]["buckets"], name
