"""Every PromQL expression the autoscaler sends is valid PromQL, checked by Prometheus' own promtool (Debian's
prometheus package, installed by hack/prometheus.sh) rather than by a query that might simply return nothing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from llmfleet.autoscale.metrics import queries

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("target", [0.1, 0.5, 2.0])
def test_every_autoscaler_query_parses_with_promtool(tmp_path: Path, target: float) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run hack/setup.sh (Debian's prometheus package)"
    q = queries(target)
    rules = {
        "groups": [{"name": "autoscaler", "rules": [{"record": f"q:{k}", "expr": v} for k, v in q.items()]}]
    }
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(q)} rules found" in out.stdout
    # The check can fail: a broken expression is refused.
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "q:x", "expr": "sum(("}]}]})
    )
    assert subprocess.run([promtool, "check", "rules", str(path)], capture_output=True).returncode != 0
