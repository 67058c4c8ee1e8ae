"""The `llmfleet plan` report: sizing, capacity and cost of one LLMDeployment, as data and as a table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmfleet.api.catalog import GIB
from llmfleet.api.sizing import Sizing, size
from llmfleet.api.v1alpha1 import LLMDeployment
from llmfleet.fleet.pools import PoolCounts, split_replicas


@dataclass(frozen=True)
class PlanReport:
    obj: LLMDeployment
    sizing: Sizing
    at_min: PoolCounts
    at_max: PoolCounts

    def cost(self, counts: PoolCounts) -> float:
        s = self.sizing
        return round(
            counts.on_demand * s.on_demand_per_replica_hour + counts.spot * s.spot_per_replica_hour, 2
        )

    def as_dict(self) -> dict[str, Any]:
        s = self.sizing
        spec = self.obj.spec
        return {
            "name": self.obj.metadata.name,
            "namespace": self.obj.metadata.namespace,
            "model": s.model.name,
            "dtype": s.dtype,
            "maxModelLen": s.max_model_len,
            "gpu": s.gpu.name,
            "tensorParallelSize": s.tensor_parallel_size,
            "tensorParallelSource": "auto" if spec.engine.tensor_parallel_size == "auto" else "spec",
            "gpusPerReplica": s.gpus_per_replica,
            "weightsGiB": round(s.weights_bytes / GIB, 2),
            "kvBytesPerToken": int(s.kv_bytes_per_token),
            "kvCapacityTokens": s.kv_capacity_tokens,
            "maxConcurrentSequences": s.max_concurrent_sequences,
            "perReplicaHour": {"onDemand": s.on_demand_per_replica_hour, "spot": s.spot_per_replica_hour},
            "fleetHour": {
                "min": {
                    "onDemand": self.at_min.on_demand,
                    "spot": self.at_min.spot,
                    "usd": self.cost(self.at_min),
                },
                "max": {
                    "onDemand": self.at_max.on_demand,
                    "spot": self.at_max.spot,
                    "usd": self.cost(self.at_max),
                },
                "maxAllOnDemand": round(self.at_max.total * s.on_demand_per_replica_hour, 2),
            },
            "priceSource": s.gpu.price_source,
        }


def make_plan(obj: LLMDeployment) -> PlanReport:
    spec = obj.spec
    sizing = size(spec)
    if spec.autoscaling.enabled:
        lo, hi = spec.autoscaling.min_replicas, spec.autoscaling.max_replicas
    else:
        lo = hi = split_replicas(spec).total
    return PlanReport(obj, sizing, split_replicas(spec, lo), split_replicas(spec, hi))


def format_plan(plan: PlanReport) -> str:
    d = plan.as_dict()
    s = plan.sizing
    saving = (
        1 - s.spot_per_replica_hour / s.on_demand_per_replica_hour if s.on_demand_per_replica_hour else 0.0
    )
    fmin, fmax = d["fleetHour"]["min"], d["fleetHour"]["max"]
    rows = [
        ("Model", f"{d['model']} ({d['dtype']}, {s.model.parameters / 1e9:.1f}B params)"),
        ("Context", f"{d['maxModelLen']} tokens"),
        (
            "GPU",
            f"{s.gpu.name} ({s.gpu.memory_gib:g} GiB), {plan.obj.spec.accelerator.gpus_per_node} per node",
        ),
        ("Tensor parallel", f"{d['tensorParallelSize']} ({d['tensorParallelSource']})"),
        ("GPUs per replica", str(d["gpusPerReplica"])),
        (
            "Weights",
            f"{d['weightsGiB']:.1f} GiB ({d['weightsGiB'] / s.tensor_parallel_size:.1f} GiB per GPU)",
        ),
        ("KV cache per token", f"{s.kv_bytes_per_token / 1024:.0f} KiB"),
        ("KV capacity", f"{s.kv_capacity_tokens:,} tokens per replica"),
        ("Max concurrent seqs", f"{s.max_concurrent_sequences} at {s.max_model_len} tokens each"),
        (
            "$/h per replica",
            f"on-demand ${s.on_demand_per_replica_hour:.2f}   spot ${s.spot_per_replica_hour:.2f}"
            f" ({saving:.0%} less)",
        ),
        ("Fleet $/h at min", f"${fmin['usd']:.2f} ({fmin['onDemand']} on-demand + {fmin['spot']} spot)"),
        (
            "Fleet $/h at max",
            f"${fmax['usd']:.2f} ({fmax['onDemand']} on-demand + {fmax['spot']} spot); "
            f"${d['fleetHour']['maxAllOnDemand']:.2f} if spot falls back to on-demand",
        ),
        ("Prices", s.gpu.price_source),
    ]
    width = max(len(k) for k, _ in rows)
    title = f"LLMDeployment {d['namespace']}/{d['name']}"
    return "\n".join([title, "-" * len(title)] + [f"{k.ljust(width)}  {v}" for k, v in rows]) + "\n"
