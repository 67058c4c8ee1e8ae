"""Conformance with vLLM's own code, not our reading of it.

- The argument definitions of the tested release (hack/vllm-source.sh: a few files of the wheel, no torch)
  decide which spellings of a flag vLLM takes; both our validations (pydantic, and the CRD's CEL rule on the
  real API server) must refuse every spelling of an owned or breaking flag and no other flag.
- vLLM itself, imported (hack/vllm-venv.sh: the release with torch, run on the CPU; hack/vllm_conform.py is the
  judge): its own `vllm serve` parser reads every rendered engine command to the values the renderer meant, and
  no extraArgs entry our validation lets through moves an owned option; its pydantic protocol models accept
  every answer engine-sim gives (whole, chunks, usage, errors), with no field vLLM does not declare.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

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


Judge = Callable[[dict[str, Any]], dict[str, Any]]


@pytest.fixture(scope="module")
def judge() -> Iterator[Judge]:
    """vLLM 0.33 itself, in its own venv, answering one JSON request a line (hack/vllm_conform.py)."""
    out = subprocess.run(
        ["bash", str(ROOT / "hack" / "vllm-venv.sh")], capture_output=True, text=True, timeout=1800
    )
    assert out.returncode == 0, f"hack/vllm-venv.sh failed:\n{out.stderr[-3000:]}"
    log = tempfile.NamedTemporaryFile(prefix="vllm-judge-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [out.stdout.strip(), str(ROOT / "hack" / "vllm_conform.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "VLLM_TARGET_DEVICE": "cpu"},
    )
    assert proc.stdin is not None and proc.stdout is not None

    def ask(req: dict[str, Any]) -> dict[str, Any]:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(req) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        assert line, f"the vLLM judge died: {Path(log.name).read_text()[-3000:]}"
        answer: dict[str, Any] = json.loads(line)
        assert answer["version"] == vllm_flags.VLLM_VERSION
        return answer

    yield ask
    proc.stdin.close()
    proc.wait(timeout=60)


OWNED_DESTS = sorted(vllm_flags.OWNED)


def engine_commands(obj) -> list[tuple[list[str], dict[str, Any]]]:
    """(container args, what the renderer meant) for each engine Deployment of one CR."""
    from llmfleet.api.sizing import size
    from llmfleet.fleet.pools import split_replicas
    from llmfleet.render import render_all
    from llmfleet.render.common import RenderInput
    from llmfleet.render.engine import vllm_options

    sizing = size(obj.spec)
    meant = vllm_options(RenderInput(obj, sizing, split_replicas(obj.spec)))
    out = []
    for m in render_all(obj, sizing):
        if m["kind"] == "Deployment" and "-engine-" in m["metadata"]["name"]:
            out.append((m["spec"]["template"]["spec"]["containers"][0]["args"], meant))
    return out


def assert_vllm_reads_as_meant(judge: Judge, commands: list[tuple[list[str], dict[str, Any]]]) -> None:
    answers = judge({"argv": [a for a, _ in commands], "dests": OWNED_DESTS})["argv"]
    for (args, meant), got in zip(commands, answers, strict=True):
        assert "ok" in got, (args, got)
        parsed = got["ok"]
        assert set(meant) <= set(OWNED_DESTS), set(meant) - set(OWNED_DESTS)
        assert {d: parsed[d] for d in meant} == meant, args
        assert parsed["model_tag"] is None, args  # nothing read as the positional model


def test_vllms_own_parser_reads_every_example_engine_command_as_meant(judge: Judge) -> None:
    from llmfleet.api.load import parse_object

    commands = []
    for example in EXAMPLES:
        for doc in yaml.safe_load_all(example.read_text()):
            if doc:
                commands += engine_commands(parse_object(doc))
    assert len(commands) >= len(EXAMPLES)
    assert_vllm_reads_as_meant(judge, commands)


SAFE_EXTRA_ARGS = (
    "--max-num-seqs=64",
    "--enforce-eager",
    "--seed=7",
    "--max-num-batched-tokens=8192",
    "--enable-chunked-prefill",
    "--kv-cache-dtype=fp8",
    "--max-logprobs=5",
)


@st.composite
def engine_crs(draw: st.DrawFn) -> dict[str, Any]:
    from llmfleet.api.catalog import GPUS, MODELS

    model = draw(st.sampled_from(sorted(MODELS)))
    spec: dict[str, Any] = {
        "model": {
            "name": model,
            "dtype": draw(st.sampled_from(["auto", "float16", "bfloat16", "fp8"])),
            "maxModelLen": draw(st.sampled_from([512, 2048, 4096, 8192])),
        },
        "accelerator": {"type": draw(st.sampled_from(sorted(GPUS)))},
        "engine": {
            "enablePrefixCaching": draw(st.booleans()),
            "gpuMemoryUtilization": draw(st.sampled_from([0.5, 0.8, 0.85, 0.9, 0.95])),
            "drain": {"shutdownTimeout": f"{draw(st.integers(0, 90))}s"},
            "extraArgs": draw(st.lists(st.sampled_from(SAFE_EXTRA_ARGS), unique=True, max_size=3)),
        },
    }
    if draw(st.booleans()):
        spec["model"]["servedName"] = draw(st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True))
    return {
        "apiVersion": "llmfleet.io/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": "gen", "namespace": "default"},
        "spec": spec,
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=engine_crs())
def test_vllms_own_parser_reads_every_generated_engine_command_as_meant(judge: Judge, doc: dict) -> None:
    from llmfleet.api.load import SpecError, parse_object
    from llmfleet.api.sizing import SizingError

    try:
        commands = engine_commands(parse_object(doc))
    except (SpecError, SizingError, ValueError):
        assume(False)  # refused with a clear error before it could render (tested elsewhere)
        return
    assert_vllm_reads_as_meant(judge, commands)


def test_no_extra_arg_our_validation_lets_through_moves_an_owned_option(
    judge: Judge, accepted: dict[str, list[str]]
) -> None:
    """Every spelling of every `vllm serve` option (aliases, underscores, prefixes, `=value` and glued forms),
    read by vLLM's own parser after a rendered command: either our validation refuses it, or vLLM refuses it,
    or every owned option keeps the value the renderer meant. And every spelling we refuse as owned is one that
    vLLM would let override an owned option (or refuse), so the guard is not wider than vLLM."""
    from llmfleet.api.load import parse_object

    doc = yaml.safe_load(EXAMPLES[0].read_text())
    base, meant = engine_commands(parse_object(doc))[0]
    candidates = sorted(
        {s for fs in accepted.values() for o in fs if o.startswith("-") for s in spellings(o)}
    )
    candidates += ["my-model", "64", "--config=/dev/null"]
    let_through = [c for c in candidates if extra_arg_problem(c) is None]
    refused = [c for c in candidates if extra_arg_problem(c) is not None]
    assert len(let_through) > 1000 and len(refused) > 100
    answers = judge({"argv": [[*base, c] for c in candidates], "dests": OWNED_DESTS})["argv"]
    by_candidate = dict(zip(candidates, answers, strict=True))

    def moves_an_owned_option(c: str) -> bool:
        got = by_candidate[c]
        return "ok" in got and (
            any(got["ok"][d] != v for d, v in meant.items()) or got["ok"]["model_tag"] is not None
        )

    assert [c for c in let_through if moves_an_owned_option(c)] == []
    overridden = [c for c in refused if moves_an_owned_option(c)]
    assert len(overridden) > 50  # the refused spellings are real ways to override what we own


def _events(kind: str, raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Each SSE data event of a stream, as (vLLM model kind, body); an in-stream error is an error."""
    out = []
    for line in raw.decode().splitlines():
        if line.startswith("data: {"):
            body = json.loads(line[6:])
            out.append(("error" if "error" in body else kind, body))
    return out


def test_engine_sim_answers_validate_against_vllms_protocol_models(judge: Judge) -> None:
    """Whole answers, stream chunks (role, text, finish, usage, continuous usage), stop strings, EOS, aborts
    during shutdown, 503 admission control and 400/404 errors: each body validates against vLLM 0.33's own
    pydantic model for it, with no field vLLM's model does not declare."""
    import signal
    import threading

    import httpx

    from tests.integration.servers import engine

    def msg(text: str, **extra: Any) -> dict[str, Any]:
        return {"model": "m", "messages": [{"role": "user", "content": text}], **extra}

    usage = {"include_usage": True}
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("chat", "/v1/chat/completions", msg("whole", max_tokens=8)),
        ("chat", "/v1/chat/completions", msg("eos", max_tokens=2000)),
        (
            "chat",
            "/v1/chat/completions",
            msg("stops", max_tokens=60, ignore_eos=True, stop=["cache", "spot"]),
        ),
        ("chat_chunk", "/v1/chat/completions", msg("stream", max_tokens=12, stream=True)),
        (
            "chat_chunk",
            "/v1/chat/completions",
            msg("usage", max_tokens=12, stream=True, stream_options=usage),
        ),
        (
            "chat_chunk",
            "/v1/chat/completions",
            msg("cont", max_tokens=12, stream=True, stream_options={**usage, "continuous_usage_stats": True}),
        ),
        ("chat_chunk", "/v1/chat/completions", msg("eos stream", max_tokens=2000, stream=True)),
        ("completion", "/v1/completions", {"model": "m", "prompt": "text", "max_tokens": 8}),
        (
            "completion_chunk",
            "/v1/completions",
            {"model": "m", "prompt": "text", "max_tokens": 8, "stream": True, "stream_options": usage},
        ),
        ("error", "/v1/chat/completions", msg("bad", max_tokens=-1)),
        ("error", "/v1/chat/completions", {**msg("who"), "model": "nope"}),
        ("error", "/v1/chat/completions", msg("bad stop", stop=5)),
        ("error", "/v1/completions", {"model": "m", "prompt": "x", "max_tokens": 2, "min_tokens": 3}),
    ]
    seen: list[tuple[str, dict[str, Any]]] = []
    e = engine("m", 200.0)
    busy = engine("m", 200.0, "--max-num-queued-reqs", "0")
    draining = engine("m", 1.0, "--shutdown-timeout", "10")
    try:
        for kind, path, body in cases:
            r = httpx.post(e.url + path, json=body, timeout=60)
            if body.get("stream") and r.status_code == 200:
                seen += _events(kind, r.content)
            else:
                assert (r.status_code == 200) == (kind != "error"), (body, r.status_code, r.text)
                seen.append((kind, r.json()))
        r = httpx.post(busy.url + "/v1/chat/completions", json=msg("full"), timeout=30)
        assert r.status_code == 503
        seen.append(("error", r.json()))
        long = threading.Thread(
            target=httpx.post,
            args=(draining.url + "/v1/chat/completions",),
            kwargs={"json": msg("long", max_tokens=200, ignore_eos=True), "timeout": 60},
        )
        long.start()
        time.sleep(0.3)
        draining.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        seen.append(
            ("chat", httpx.post(draining.url + "/v1/chat/completions", json=msg("late"), timeout=30).json())
        )
        late = httpx.post(
            draining.url + "/v1/completions", json={"model": "m", "prompt": "late", "stream": True}
        )
        seen += _events("completion_chunk", late.content)
        long.join()
    finally:
        for s in (e, busy, draining):
            s.stop()
    finishes = {c.get("finish_reason") for _, b in seen for c in b.get("choices", [])}
    assert {"stop", "length", "abort"} <= finishes
    assert any(
        k == "chat_chunk" and b["choices"] == [] and b.get("usage") for k, b in seen
    )  # the usage chunk
    assert (
        sum(1 for k, b in seen if k == "chat_chunk" and b["choices"] and b.get("usage")) >= 12
    )  # continuous
    problems = judge({"responses": [{"kind": k, "body": b} for k, b in seen]})["responses"]
    bad = [(k, b, p) for (k, b), p in zip(seen, problems, strict=True) if p]
    assert bad == []
