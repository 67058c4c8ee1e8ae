"""The chart's Prometheus rules (operator/llmfleet/monitoring.py), judged by Prometheus' own promtool: every
rule parses (``promtool check rules``), and every alert fires on series that should page and stays silent on
series that should not (``promtool test rules``, with the series each scenario names)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmfleet import monitoring
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

WHO = 'namespace="ns", name="chat", model_name="chat"'
WHO_LABELS = {"namespace": "ns", "name": "chat", "model_name": "chat"}
GW = 'namespace="ns", service="chat-gateway"'
GW_LABELS = {"namespace": "ns", "service": "chat-gateway"}


def _engine(miss_per_min: int, total_per_min: int = 100) -> list[dict[str, str]]:
    """Two engine pods' TTFT histograms (the target's bucket, +Inf and count) plus the operator's SLO series."""
    series = []
    for pod in ("e-0", "e-1"):
        at = f'{{namespace="ns", model_name="chat", pod="{pod}", engine="0"'
        within = total_per_min - miss_per_min
        series += [
            {
                "series": f'vllm:time_to_first_token_seconds_bucket{at}, le="0.5"}}',
                "values": f"0+{within}x400",
            },
            {
                "series": f'vllm:time_to_first_token_seconds_bucket{at}, le="+Inf"}}',
                "values": f"0+{total_per_min}x400",
            },
            {"series": f"vllm:time_to_first_token_seconds_count{at}}}", "values": f"0+{total_per_min}x400"},
        ]
    return series + [
        {"series": f'llmfleet_deployment_ttft_slo_bucket{{{WHO}, le="0.5"}}', "values": "1x400"},
        {"series": f"llmfleet_deployment_ttft_error_budget{{{WHO}}}", "values": "0.01x400"},
    ]


def _condition(ctype: str, reason: str, value: int) -> list[dict[str, str]]:
    return [
        {
            "series": f'llmfleet_deployment_condition{{{WHO}, type="{ctype}", reason="{reason}"}}',
            "values": f"{value}x60",
        }
    ]


def _requests(ok: int, failed: int) -> list[dict[str, str]]:
    at = f'{GW}, route="self-hosted", key="k1"'
    return [
        {"series": f'llmfleet_gateway_requests_total{{{at}, status="200"}}', "values": f"0+{ok}x40"},
        {"series": f'llmfleet_gateway_requests_total{{{at}, status="502"}}', "values": f"0+{failed}x40"},
        {"series": f'llmfleet_gateway_requests_total{{{at}, status="401"}}', "values": "0+50x40"},
    ]


def _cache(bypass: int, miss: int) -> list[dict[str, str]]:
    return [
        {"series": f'llmfleet_gateway_cache_total{{{GW}, result="bypass"}}', "values": f"0+{bypass}x40"},
        {"series": f'llmfleet_gateway_cache_total{{{GW}, result="miss"}}', "values": f"0+{miss}x40"},
        {"series": f'llmfleet_gateway_cache_total{{{GW}, result="error"}}', "values": "0x40"},
    ]


def _limit_fallbacks(per_min: int) -> list[dict[str, str]]:
    return [
        {"series": f'llmfleet_gateway_limit_fallbacks_total{{{GW}, reason="{reason}"}}', "values": values}
        for reason, values in (("timeout", f"0+{per_min}x40"), ("error", "0x40"), ("open", "0x40"))
    ]


def _starts(values: str) -> list[dict[str, str]]:
    return [
        {
            "series": 'process_start_time_seconds{namespace="ns", pod="chat-spot-0", component="engine"}',
            "values": values,
        }
    ]


POD_LABELS = {"namespace": "ns", "pod": "chat-spot-0", "component": "engine"}
ENGINE_LABELS = {"namespace": "ns", "model_name": "chat", "name": "chat"}

# alert → [(series, eval time, labels expected to fire or None for silence)]
SCENARIOS: dict[str, list[tuple[list[dict[str, str]], str, dict[str, str] | None]]] = {
    # 50 % of first tokens late against a 1 % budget: a burn rate of 50, over both thresholds.
    "LLMFleetTTFTBudgetBurnFast": [(_engine(50), "70m", ENGINE_LABELS), (_engine(0), "70m", None)],
    "LLMFleetTTFTBudgetBurnSlow": [(_engine(10), "400m", ENGINE_LABELS), (_engine(3), "400m", None)],
    "LLMFleetSpotFallbackActive": [
        (
            _condition("SpotFallback", "SpotCapacityUnavailable", 1),
            "40m",
            {**WHO_LABELS, "type": "SpotFallback", "reason": "SpotCapacityUnavailable"},
        ),
        (_condition("SpotFallback", "SpotCapacityUnavailable", 1), "20m", None),  # not for long yet
        (_condition("SpotFallback", "SpotAvailable", 0), "40m", None),
    ],
    "LLMFleetMetricsMissing": [
        (
            _condition("MetricsAvailable", "PrometheusUnreachable", 0),
            "15m",
            {**WHO_LABELS, "type": "MetricsAvailable", "reason": "PrometheusUnreachable"},
        ),
        (_condition("MetricsAvailable", "AutoscalingDisabled", 0), "15m", None),
        (_condition("MetricsAvailable", "MetricsRead", 1), "15m", None),
    ],
    "LLMFleetNotReady": [
        (
            _condition("Ready", "ReplicasNotReady", 0),
            "20m",
            {**WHO_LABELS, "type": "Ready", "reason": "ReplicasNotReady"},
        ),
        (_condition("Ready", "ScaledToZero", 0), "20m", None),
    ],
    "LLMFleetDegraded": [
        (
            _condition("Degraded", "InvalidSpec", 1),
            "10m",
            {**WHO_LABELS, "type": "Degraded", "reason": "InvalidSpec"},
        ),
        (_condition("Degraded", "AsExpected", 0), "10m", None),
    ],
    # 10 % of requests 5xx (client errors do not count), then none at all: 0, not absent.
    "LLMFleetGatewayErrors": [(_requests(90, 10), "20m", GW_LABELS), (_requests(100, 0), "20m", None)],
    "LLMFleetCacheBypassed": [(_cache(80, 20), "20m", GW_LABELS), (_cache(0, 100), "20m", None)],
    # A replica deciding on its own now and then (Redis timing out), then never: 0, not absent.
    "LLMFleetGatewayLimitsNotShared": [
        (_limit_fallbacks(3), "20m", GW_LABELS),
        (_limit_fallbacks(0), "20m", None),
    ],
    "LLMFleetPodsRestarting": [
        (_starts("100 100 400 400 700 700 1000 1000"), "7m", POD_LABELS),
        (_starts("100 100 100 400 400 400 400 400"), "7m", None),
    ],
    "LLMFleetOperatorAbsent": [
        ([{"series": "llmfleet_operator_leader", "values": "0x20"}], "15m", {}),
        ([{"series": "llmfleet_operator_leader", "values": "1x20"}], "15m", None),
    ],
}


def _render(template: str, labels: dict[str, str]) -> str:
    out = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), template)
    assert "{{" not in out, f"the test renders $labels only: {template}"
    return out


def _promtool() -> str:
    exe = shutil.which("promtool")
    assert exe, "promtool is missing: run hack/setup.sh (Debian's prometheus package)"
    return exe


def test_the_shipped_rules_are_the_generated_ones_and_promtool_accepts_them(tmp_path: Path) -> None:
    shipped = yaml.safe_load((ROOT / "charts/llmfleet/files/prometheus-rules.yaml").read_text())
    assert shipped == monitoring.rule_groups(), "stale: run hack/gen.sh"
    out = subprocess.run(
        [_promtool(), "check", "rules", str(ROOT / "charts/llmfleet/files/prometheus-rules.yaml")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    n = sum(len(g["rules"]) for g in shipped["groups"])
    assert f"{n} rules found" in out.stdout
    # The same check refuses a broken expression.
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"alert": "X", "expr": "rate(x[5m]"}]}]})
    )
    assert subprocess.run([_promtool(), "check", "rules", str(bad)], capture_output=True).returncode != 0


def test_every_alert_has_a_scenario() -> None:
    assert set(SCENARIOS) == {a.name for a in monitoring.alerts()}


def _unit_tests() -> dict[str, Any]:
    by_name = {a.name: a for a in monitoring.alerts()}
    tests = []
    for name, cases in SCENARIOS.items():
        alert = by_name[name]
        for series, at, labels in cases:
            expected = []
            if labels is not None:
                annotations = {
                    k: _render(v, labels) if "{{" in v else v for k, v in alert.rule()["annotations"].items()
                }
                expected = [
                    {"exp_labels": {**labels, "severity": alert.severity}, "exp_annotations": annotations}
                ]
            tests.append(
                {
                    "name": f"{name} at {at}: {'fires' if labels is not None else 'silent'}",
                    "interval": "1m",
                    "input_series": series,
                    "alert_rule_test": [{"eval_time": at, "alertname": name, "exp_alerts": expected}],
                }
            )
    return {
        "rule_files": [str(ROOT / "charts/llmfleet/files/prometheus-rules.yaml")],
        "evaluation_interval": "1m",
        "tests": tests,
    }


def test_each_alert_fires_on_what_should_page_and_not_otherwise(tmp_path: Path) -> None:
    spec = tmp_path / "alerts_test.yaml"
    spec.write_text(yaml.safe_dump(_unit_tests(), sort_keys=False, width=1000))
    out = subprocess.run([_promtool(), "test", "rules", str(spec)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


def test_promtool_test_fails_when_an_alert_does_not_fire_as_expected(tmp_path: Path) -> None:
    """The harness can fail: a healthy fleet expected to page is reported as a failure."""
    tests = _unit_tests()
    case = next(
        t for t in tests["tests"] if t["name"].startswith("LLMFleetGatewayErrors") and "silent" in t["name"]
    )
    case["alert_rule_test"][0]["exp_alerts"] = [{"exp_labels": {**GW_LABELS, "severity": "critical"}}]
    tests["tests"] = [case]
    spec = tmp_path / "alerts_test.yaml"
    spec.write_text(yaml.safe_dump(tests, sort_keys=False, width=1000))
    out = subprocess.run([_promtool(), "test", "rules", str(spec)], capture_output=True, text=True)
    assert out.returncode != 0
