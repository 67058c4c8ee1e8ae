"""The chart's dashboard and rules as data (operator/llmfleet/monitoring.py); promtool and a live Prometheus
judge the expressions in tests/integration/test_monitoring_rules.py and tests/e2e/test_dev_up.py."""

from __future__ import annotations

import json
import re

from llmfleet import monitoring
from tests.conftest import ROOT


def test_the_dashboard_has_a_row_per_concern_and_every_panel_queries() -> None:
    board = monitoring.dashboard()
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == [
        "Traffic",
        "Latency against the target",
        "Queue and KV cache",
        "Replicas and spot",
        "Reclaims and restarts",
        "Cache",
        "Gateway errors",
        "Cost",
    ]
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert all(p["targets"] and all(t["expr"] for t in p["targets"]) for p in panels)
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "namespace", "model"}
    # Only the dashboard's own variables appear in its queries.
    used = {m for e in monitoring.expressions() for m in re.findall(r"\$(\w+)", e)}
    assert used <= {"namespace", "model"}
    assert json.loads((ROOT / "charts/llmfleet/files/grafana-dashboard.json").read_text()) == board, (
        "stale: run hack/gen.sh"
    )


def test_every_alert_names_its_runbook_entry_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for alert in monitoring.alerts():
        rule = alert.rule()
        assert rule["annotations"]["runbook_url"].endswith("#" + alert.name.lower())
        assert f"#### {alert.name}\n" in readme
        assert rule["labels"]["severity"] in ("warning", "critical")


def test_recording_rules_cover_what_the_autoscaler_reads_and_each_slo_window() -> None:
    records = {r["record"] for r in monitoring.recording_rules()}
    assert set(monitoring.RECORDED.values()) <= records
    for w in monitoring.SLO_WINDOWS:
        assert {f"llmfleet:ttft_miss_ratio:rate{w}", f"llmfleet:ttft_burn_rate:rate{w}"} <= records
