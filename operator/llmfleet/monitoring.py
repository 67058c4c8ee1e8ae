"""Monitoring that ships with the chart: the Prometheus rules (recording rules for what the autoscaler reads and
the SLO arithmetic, alerts a platform team pages on) and the Grafana dashboard, both rendered from code here.

``hack/gen.sh`` writes them into the chart (``charts/llmfleet/files/``), where a ``PrometheusRule`` and a
dashboard ConfigMap (Grafana's sidecar label) carry them; tests run ``promtool check/test rules`` on the rules
and evaluate every expression below against a live local Prometheus scraping a dev fleet.

Series used: vLLM's own (``vllm:*``, grouped by ``namespace, model_name``), the gateways'
(``llmfleet_gateway_*``, by ``namespace, service``), the operator's (``llmfleet_deployment_*``, scraped with
honor_labels, reconcile/metrics.py) and ``process_start_time_seconds`` of the pods (``component`` label from
the PodMonitor's relabelling). The TTFT SLO joins vLLM's histogram with the operator's
``llmfleet_deployment_ttft_slo_bucket`` on ``le``: each deployment is judged at its own ``ttftP95Target``.

The dashboard is built with grafana-foundation-sdk (a build-time dependency, imported in ``dashboard()`` only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llmfleet.autoscale.metrics import FLEET, GATEWAY, queries

# Recording rules for the autoscaler's figures (autoscale/metrics.py's queries, by figure).
RECORDED = {
    "arrivals": "llmfleet:gateway_arrivals:rate1m",
    "waiting": "llmfleet:engine_waiting_requests:sum",
    "running": "llmfleet:engine_running_requests:sum",
    "ready": "llmfleet:engine_ready_replicas:count",
    "kv": "llmfleet:engine_kv_cache_usage:avg",
    "ttft": "llmfleet:engine_ttft_seconds:p95_1m",
    "prompt_tps": "llmfleet:engine_prompt_tokens:rate1m",
    "prompt_compute_tps": "llmfleet:engine_prompt_compute_tokens:rate1m",
    "generation_tps": "llmfleet:engine_generation_tokens:rate1m",
    "prompt_peak_tps": "llmfleet:engine_prompt_tokens:peak30s_1m",
}
SLO_WINDOWS = ("5m", "30m", "1h", "6h")
# Google SRE workbook's multiwindow, multi-burn-rate alerts for a 30-day budget: (long, short, burn, for).
BURN_ALERTS = (("1h", "5m", 14.4, "2m", "critical"), ("6h", "30m", 6.0, "15m", "warning"))
CACHE_RESULTS = ("exact", "semantic", "miss", "bypass", "corrupt", "error")
CACHE_BYPASSED = 'result=~"bypass|error"'
GATEWAY_5XX = 'status=~"5.."'
RUNBOOK = "https://github.com/llmfleet/llmfleet/blob/main/README.md#"  # + the alert, lower-cased


def miss_ratio(window: str) -> str:
    """Share of first tokens over each deployment's ttftP95Target in the window."""
    slo = "max by (namespace, model_name, le) (llmfleet_deployment_ttft_slo_bucket)"
    return (
        f"1 - sum by ({FLEET}) (rate(vllm:time_to_first_token_seconds_bucket[{window}])"
        f" * on (namespace, model_name, le) group_left () {slo})"
        f" / sum by ({FLEET}) (rate(vllm:time_to_first_token_seconds_count[{window}]))"
    )


def burn_rate(window: str) -> str:
    """The miss ratio over the error budget (1 - ttftAttainmentTarget): 1 spends the budget exactly."""
    return (
        f"llmfleet:ttft_miss_ratio:rate{window} / on (namespace, model_name) group_left (name)"
        " max by (namespace, model_name, name) (llmfleet_deployment_ttft_error_budget)"
    )


def _share(selector: str, metric: str, by: str) -> str:
    """The share of ``metric``'s rate matching ``selector``, 0 (not absent) when nothing matches."""
    part = f"sum by ({by}) (rate({metric}{{{selector}}}[5m]))"
    whole = f"sum by ({by}) (rate({metric}[5m]))"
    return f"({part} or {whole} * 0) / {whole}"


def recording_rules() -> list[dict[str, str]]:
    q = queries()
    rules = [{"record": RECORDED[k], "expr": q[k]} for k in RECORDED]
    rules += [{"record": f"llmfleet:ttft_miss_ratio:rate{w}", "expr": miss_ratio(w)} for w in SLO_WINDOWS]
    rules += [{"record": f"llmfleet:ttft_burn_rate:rate{w}", "expr": burn_rate(w)} for w in SLO_WINDOWS]
    rules += [
        {
            "record": "llmfleet:gateway_error_ratio:rate5m",
            "expr": _share(GATEWAY_5XX, "llmfleet_gateway_requests_total", GATEWAY),
        },
        {
            "record": "llmfleet:gateway_cache_bypassed_ratio:rate5m",
            "expr": _share(CACHE_BYPASSED, "llmfleet_gateway_cache_total", GATEWAY),
        },
    ]
    return rules


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str  # what fires
    signal: str  # the figure it compares: returns data on a healthy live fleet (tested)
    for_: str
    severity: str
    summary: str
    description: str

    def rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": f"{RUNBOOK}{self.name.lower()}",
            },
        }


def _condition(ctype: str, extra: str = "") -> str:
    return f'llmfleet_deployment_condition{{type="{ctype}"{extra}}}'


def alerts() -> list[Alert]:
    out = [
        Alert(
            name=f"LLMFleetTTFTBudgetBurn{'Fast' if severity == 'critical' else 'Slow'}",
            expr=f"llmfleet:ttft_burn_rate:rate{long} > {burn} and llmfleet:ttft_burn_rate:rate{short} > {burn}",
            signal=f"llmfleet:ttft_burn_rate:rate{long}",
            for_=for_,
            severity=severity,
            summary="{{ $labels.namespace }}/{{ $labels.name }} spends its TTFT error budget "
            + f"{burn}x too fast",
            description=(
                f"Over {long} (and {short}) more first tokens missed ttftP95Target than ttftAttainmentTarget "
                f"allows: {burn} times the rate that spends the error budget in 30 days. Check the Scaled "
                "events and status.autoscaling.history: at maxReplicas, waiting on spot capacity, or Prometheus "
                "data missing."
            ),
        )
        for long, short, burn, for_, severity in BURN_ALERTS
    ]
    out += [
        Alert(
            name="LLMFleetSpotFallbackActive",
            expr=f"{_condition('SpotFallback')} == 1",
            signal=_condition("SpotFallback"),
            for_="30m",
            severity="warning",
            summary="{{ $labels.namespace }}/{{ $labels.name }} has run on-demand instead of spot for 30 minutes",
            description=(
                "SpotFallback is True ({{ $labels.reason }}): spot replicas could not start, so on-demand ones "
                "serve at a higher cost. Check spot capacity in the node pools."
            ),
        ),
        Alert(
            name="LLMFleetMetricsMissing",
            expr=_condition("MetricsAvailable", ', reason!="AutoscalingDisabled"') + " == 0",
            signal=_condition("MetricsAvailable"),
            for_="10m",
            severity="warning",
            summary="the autoscaler of {{ $labels.namespace }}/{{ $labels.name }} has no metrics",
            description=(
                "MetricsAvailable is False ({{ $labels.reason }}): the autoscaler holds the replica count "
                "instead of following load. Check that Prometheus scrapes the engines and is reachable."
            ),
        ),
        Alert(
            name="LLMFleetNotReady",
            expr=_condition("Ready", ', reason!="ScaledToZero"') + " == 0",
            signal=_condition("Ready"),
            for_="15m",
            severity="warning",
            summary="{{ $labels.namespace }}/{{ $labels.name }} has not been Ready for 15 minutes",
            description="Ready is False ({{ $labels.reason }}); kubectl describe llmd shows why.",
        ),
        Alert(
            name="LLMFleetDegraded",
            expr=f"{_condition('Degraded')} == 1",
            signal=_condition("Degraded"),
            for_="5m",
            severity="warning",
            summary="{{ $labels.namespace }}/{{ $labels.name }} is Degraded ({{ $labels.reason }})",
            description="The operator cannot act on the spec as written; the condition's message names the field.",
        ),
        Alert(
            name="LLMFleetGatewayErrors",
            expr="llmfleet:gateway_error_ratio:rate5m > 0.05",
            signal="llmfleet:gateway_error_ratio:rate5m",
            for_="5m",
            severity="critical",
            summary="{{ $labels.namespace }}/{{ $labels.service }} answers over 5 % of requests with 5xx",
            description=(
                "More than 5 % of the gateway's requests failed server-side over 5 minutes. The "
                "llmfleet_gateway_upstream_errors_total kinds say whether engines refuse, cut or cannot be reached."
            ),
        ),
        Alert(
            name="LLMFleetCacheBypassed",
            expr="llmfleet:gateway_cache_bypassed_ratio:rate5m > 0.5",
            signal="llmfleet:gateway_cache_bypassed_ratio:rate5m",
            for_="10m",
            severity="warning",
            summary="{{ $labels.namespace }}/{{ $labels.service }} bypasses its cache",
            description=(
                "Most cache lookups were skipped (circuit breaker open) or failed for 10 minutes: every request "
                "reaches the engines. Check the cache Redis pod and its credentials Secret."
            ),
        ),
        Alert(
            name="LLMFleetGatewayLimitsNotShared",
            expr="sum by (namespace, service) (rate(llmfleet_gateway_limit_fallbacks_total[5m])) > 0",
            signal="sum by (namespace, service) (rate(llmfleet_gateway_limit_fallbacks_total[5m]))",
            for_="10m",
            severity="warning",
            summary="{{ $labels.namespace }}/{{ $labels.service }} enforces rate limits per replica",
            description=(
                "For 10 minutes some rate-limit decisions were taken by a gateway replica on its own because "
                "Redis did not answer: meanwhile every replica admits a key's whole limit. Check the cache "
                "Redis pod; llmfleet_gateway_limit_fallbacks_total by reason says timeout, error or open."
            ),
        ),
        Alert(
            name="LLMFleetPodsRestarting",
            expr='changes(process_start_time_seconds{component=~"engine|gateway"}[15m]) > 2',
            signal='changes(process_start_time_seconds{component=~"engine|gateway"}[15m])',
            for_="0m",
            severity="warning",
            summary="{{ $labels.component }} {{ $labels.namespace }}/{{ $labels.pod }} restarted more than "
            "twice in 15 minutes",
            description="A crash loop: its logs (kubectl logs --previous) say why.",
        ),
        Alert(
            name="LLMFleetOperatorAbsent",
            expr="sum(llmfleet_operator_leader) < 1 or absent(llmfleet_operator_leader)",
            signal="sum(llmfleet_operator_leader)",
            for_="10m",
            severity="critical",
            summary="no llmfleet operator holds the lease",
            description=(
                "No replica reports being the leader: nothing reconciles or autoscales the LLMDeployments."
            ),
        ),
    ]
    return out


def rule_groups() -> dict[str, Any]:
    """The ``spec`` of the PrometheusRule (also a plain rule file for promtool and non-operator Prometheus)."""
    return {
        "groups": [
            {"name": "llmfleet.rules", "rules": recording_rules()},
            {"name": "llmfleet.alerts", "rules": [a.rule() for a in alerts()]},
        ]
    }


# -- The dashboard -------------------------------------------------------------------------------------------

SEL = 'namespace=~"$namespace", model_name=~"$model"'
GW = 'namespace=~"$namespace"'


def panels() -> list[tuple[str, list[tuple[str, str, list[tuple[str, str]]]]]]:
    """Rows of (title, [(panel title, unit, [(expr, legend)])]): one row per concern."""
    r = RECORDED
    return [
        (
            "Traffic",
            [
                (
                    "Gateway requests by route",
                    "reqps",
                    [(f"sum by (route) (rate(llmfleet_gateway_requests_total{{{GW}}}[1m]))", "{{route}}")],
                ),
                (
                    "Engine tokens per second",
                    "short",
                    [
                        (f"sum by (model_name) ({r['prompt_tps']}{{{SEL}}})", "prompt {{model_name}}"),
                        (
                            f"sum by (model_name) ({r['prompt_compute_tps']}{{{SEL}}})",
                            "prefill {{model_name}}",
                        ),
                        (f"sum by (model_name) ({r['generation_tps']}{{{SEL}}})", "generated {{model_name}}"),
                    ],
                ),
            ],
        ),
        (
            "Latency against the target",
            [
                (
                    "TTFT p95 vs ttftP95Target",
                    "s",
                    [
                        (f"{r['ttft']}{{{SEL}}}", "engines p95 {{model_name}}"),
                        (f"max by (model_name) (llmfleet_deployment_ttft_target_seconds{{{SEL}}})", "target"),
                        (
                            "histogram_quantile(0.95, sum by (service, le) "
                            f"(rate(llmfleet_gateway_ttft_seconds_bucket{{{GW}}}[1m])))",
                            "gateway p95 {{service}}",
                        ),
                    ],
                ),
                (
                    "Inter-token latency p95",
                    "s",
                    [
                        (
                            "histogram_quantile(0.95, sum by (model_name, le) "
                            f"(rate(vllm:inter_token_latency_seconds_bucket{{{SEL}}}[1m])))",
                            "{{model_name}}",
                        )
                    ],
                ),
                (
                    "TTFT error-budget burn rate",
                    "short",
                    [
                        (f"llmfleet:ttft_burn_rate:rate{w}{{{SEL}}}", f"{w} {{{{name}}}}")
                        for w in ("5m", "1h")
                    ],
                ),
            ],
        ),
        (
            "Queue and KV cache",
            [
                (
                    "Requests waiting and running",
                    "short",
                    [
                        (f"{r['waiting']}{{{SEL}}}", "waiting {{model_name}}"),
                        (f"{r['running']}{{{SEL}}}", "running {{model_name}}"),
                    ],
                ),
                ("KV-cache usage", "percentunit", [(f"{r['kv']}{{{SEL}}}", "{{model_name}}")]),
            ],
        ),
        (
            "Replicas and spot",
            [
                (
                    "Ready replicas per pool",
                    "short",
                    [
                        (
                            f'sum by (pool) (llmfleet_deployment_replicas{{{SEL}, state="ready"}})',
                            "ready {{pool}}",
                        ),
                        (
                            f'sum by (pool) (llmfleet_deployment_replicas{{{SEL}, state="desired"}})',
                            "desired {{pool}}",
                        ),
                    ],
                ),
                (
                    "Spot share of ready replicas",
                    "percentunit",
                    [
                        (
                            f'sum(llmfleet_deployment_replicas{{{SEL}, state="ready", pool="spot"}})'
                            f' / clamp_min(sum(llmfleet_deployment_replicas{{{SEL}, state="ready"}}), 1)',
                            "spot share",
                        )
                    ],
                ),
            ],
        ),
        (
            "Reclaims and restarts",
            [
                (
                    "Spot reclaims (engine pods drained)",
                    "short",
                    [
                        (
                            f"sum by (name, pool) (increase(llmfleet_deployment_reclaims_total{{{SEL}}}[1h]))",
                            "{{name}} {{pool}}",
                        )
                    ],
                ),
                (
                    "Spot fallback active",
                    "short",
                    [(f'llmfleet_deployment_condition{{{SEL}, type="SpotFallback"}}', "{{name}} {{reason}}")],
                ),
                (
                    "Pod restarts (15m)",
                    "short",
                    [
                        (
                            f'changes(process_start_time_seconds{{{GW}, component=~"engine|gateway"}}[15m])',
                            "{{component}} {{pod}}",
                        )
                    ],
                ),
            ],
        ),
        (
            "Cache",
            [
                (
                    "Cache lookups by result",
                    "reqps",
                    [(f"sum by (result) (rate(llmfleet_gateway_cache_total{{{GW}}}[5m]))", "{{result}}")],
                ),
                (
                    "Hit ratio",
                    "percentunit",
                    [
                        (
                            f'sum(rate(llmfleet_gateway_cache_total{{{GW}, result=~"exact|semantic"}}[5m]))'
                            f" / sum(rate(llmfleet_gateway_cache_total{{{GW}}}[5m]))",
                            "hits",
                        )
                    ],
                ),
                (
                    "Semantic hits: lowest similarity served (false-hit guard)",
                    "short",
                    [
                        (
                            "histogram_quantile(0.05, sum by (le) "
                            f"(rate(llmfleet_gateway_cache_similarity_bucket{{{GW}}}[5m])))",
                            "p5 similarity",
                        )
                    ],
                ),
                (
                    "Completion tokens saved",
                    "short",
                    [(f"sum(rate(llmfleet_gateway_cache_saved_tokens_total{{{GW}}}[5m]))", "tokens/s")],
                ),
            ],
        ),
        (
            "Gateway errors",
            [
                (
                    "Responses by status class",
                    "reqps",
                    [
                        (
                            "sum by (class) (label_replace(rate(llmfleet_gateway_requests_total{"
                            + GW
                            + '}[5m]), "class", "${1}xx", "status", "([0-9]).."))',
                            "{{class}}",
                        )
                    ],
                ),
                (
                    "Upstream errors by kind",
                    "reqps",
                    [
                        (
                            f"sum by (route, kind) (rate(llmfleet_gateway_upstream_errors_total{{{GW}}}[5m]))",
                            "{{route}} {{kind}}",
                        )
                    ],
                ),
            ],
        ),
        (
            "Cost",
            [
                (
                    "Cost per hour",
                    "currencyUSD",
                    [(f"sum by (name) (llmfleet_deployment_cost_per_hour{{{SEL}}})", "{{name}}")],
                ),
            ],
        ),
    ]


def expressions() -> list[str]:
    """Every PromQL expression the dashboard runs (variables left in)."""
    return [expr for _, row in panels() for _, _, targets in row for expr, _ in targets]


def dashboard() -> dict[str, Any]:
    """The Grafana dashboard, as the JSON model Grafana imports."""
    from grafana_foundation_sdk.builders import dashboard as gd
    from grafana_foundation_sdk.builders import prometheus as gp
    from grafana_foundation_sdk.builders import timeseries as gt
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    ds = DataSourceRef(type_val="prometheus", uid="${datasource}")
    board = (
        gd.Dashboard("llmfleet")
        .uid("llmfleet-overview")
        .description(
            "LLMDeployments: traffic, latency against the target, queue, replicas, cache, errors, cost."
        )
        .tags(["llmfleet", "llm", "vllm"])
        .refresh("30s")
        .time("now-3h", "now")
        .with_variable(gd.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(
            gd.QueryVariable("namespace")
            .label("Namespace")
            .datasource(ds)
            .query("label_values(llmfleet_deployment_replicas, namespace)")
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        .with_variable(
            gd.QueryVariable("model")
            .label("Model")
            .datasource(ds)
            .query('label_values(llmfleet_deployment_replicas{namespace=~"$namespace"}, model_name)')
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    )
    for title, row in panels():
        board = board.with_row(gd.Row(title))
        width = 24 // len(row)
        for panel_title, unit, targets in row:
            panel = gt.Panel().title(panel_title).unit(unit).datasource(ds).height(8).span(width)
            for i, (expr, legend) in enumerate(targets):
                panel = panel.with_target(gp.Dataquery().expr(expr).legend_format(legend).ref_id(chr(65 + i)))
            board = board.with_panel(panel)
    out: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True, indent=2).encode(board.build()))
    return out
