"""Tensor-parallel and KV-cache sizing, and cost per replica-hour: pure arithmetic over the catalogs.

Memory model per GPU (what vLLM does at start-up, simplified):
``gpuMemoryUtilization × memory ≥ weights/TP + overhead + KV(tokens)``, where overhead covers the CUDA
context, activations for a prefill chunk and CUDA graphs, and KV per token per GPU is
``2 × layers × kvHeadsPerGPU × headDim × bytes`` (KV heads are split across TP, or replicated when
TP exceeds them). TP is the smallest power of two that divides the attention heads, fits on one node
and leaves room for at least ``MIN_SEQUENCES`` sequences of ``maxModelLen`` tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmfleet.api.catalog import BYTES_PER_PARAM, GIB, GPU, GPUS, KV_BYTES_PER_ELEMENT, ModelArch, find_model
from llmfleet.api.v1alpha1 import LLMDeploymentSpec

OVERHEAD_BYTES_PER_GPU = 2 * GIB
MIN_SEQUENCES = 4
TP_CHOICES = (1, 2, 4, 8, 16)


class SizingError(ValueError):
    """The spec cannot be sized: ``field`` names the spec path, the message says what would fix it."""

    def __init__(self, field: str, message: str, fixes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.field = field
        self.fixes = fixes


@dataclass(frozen=True)
class Sizing:
    model: ModelArch
    gpu: GPU
    dtype: str
    tensor_parallel_size: int
    weights_bytes: float
    kv_bytes_per_token: float  # whole model, all layers, one token
    kv_bytes_per_token_per_gpu: float
    kv_capacity_tokens: int  # tokens the KV cache of one replica holds
    max_concurrent_sequences: int  # at maxModelLen
    max_model_len: int
    on_demand_per_replica_hour: float
    spot_per_replica_hour: float

    @property
    def gpus_per_replica(self) -> int:
        return self.tensor_parallel_size


def resolve_dtype(dtype: str, gpu: GPU) -> str:
    """The weight precision vLLM runs with: ``auto`` is bfloat16 where the GPU has it, else float16 (vLLM's
    own ``--dtype auto`` picks the checkpoint's dtype and falls back the same way). bfloat16 asked of a GPU
    without it (compute capability below 8.0: T4, V100) is refused as vLLM refuses it, at admission instead
    of in a crash-looping pod; fp8 (Marlin or native kernels) needs 8.0 too."""
    if dtype == "auto":
        return "bfloat16" if gpu.bfloat16 else "float16"
    if dtype in ("bfloat16", "fp8") and not gpu.bfloat16:
        raise SizingError(
            "spec.model.dtype",
            f"{gpu.name} (compute capability {gpu.compute_capability:g}) has no {dtype} support in vLLM: set "
            "spec.model.dtype to float16 (or auto, which picks it).",
            ("dtype=float16",),
        )
    return dtype


def resolve_model(spec: LLMDeploymentSpec) -> ModelArch:
    m = spec.model
    if m.architecture is not None:
        a = m.architecture
        assert m.parameters is not None  # enforced by the spec validator
        return ModelArch(
            name=m.name,
            parameters=m.parameters,
            layers=a.layers,
            hidden_size=a.hidden_size,
            attention_heads=a.attention_heads,
            kv_heads=a.kv_heads or a.attention_heads,
            head_dim=a.head_dim or a.hidden_size // a.attention_heads,
            max_context=a.max_position_embeddings,
            source="spec.model.architecture",
        )
    found = find_model(m.name)
    if found is None:
        raise SizingError(
            "spec.model.architecture",
            f"model {m.name!r} is not in the catalog: give spec.model.parameters and spec.model.architecture "
            "(layers, hiddenSize, attentionHeads, kvHeads) from its config.json",
        )
    if m.parameters is not None:
        return ModelArch(**{**found.__dict__, "parameters": m.parameters})
    return found


def resolve_gpu(spec: LLMDeploymentSpec) -> GPU:
    acc = spec.accelerator
    base = GPUS.get(acc.type)
    if base is None:
        if acc.memory_gi_b is None or acc.pricing is None:
            raise SizingError(
                "spec.accelerator.type",
                f"unknown GPU type {acc.type!r}; known: {', '.join(GPUS)} "
                "(or set accelerator.memoryGiB and accelerator.pricing for another GPU)",
            )
        base = GPU(acc.type, acc.memory_gi_b, 0.5, 0.0, 0.0, "spec.accelerator")
    pricing = acc.pricing
    return GPU(
        name=base.name,
        memory_gib=acc.memory_gi_b or base.memory_gib,
        relative_speed=base.relative_speed,
        on_demand_per_hour=(
            pricing.on_demand_per_gpu_hour
            if pricing and pricing.on_demand_per_gpu_hour is not None
            else base.on_demand_per_hour
        ),
        spot_per_hour=(
            pricing.spot_per_gpu_hour
            if pricing and pricing.spot_per_gpu_hour is not None
            else base.spot_per_hour
        ),
        price_source="spec.accelerator.pricing" if pricing else base.price_source,
        compute_capability=base.compute_capability,
    )


def kv_bytes_per_token(model: ModelArch, dtype: str, tp: int = 1) -> float:
    kv_heads_per_gpu = max(1, math.ceil(model.kv_heads / tp))
    return 2 * model.layers * kv_heads_per_gpu * model.head_dim * KV_BYTES_PER_ELEMENT[dtype]


def _fits(model: ModelArch, gpu: GPU, dtype: str, tp: int, util: float, max_len: int) -> tuple[float, float]:
    """(KV bytes free per GPU, KV bytes per token per GPU) for this TP; free < 0 means weights do not fit."""
    weights = model.parameters * BYTES_PER_PARAM[dtype]
    free = util * gpu.memory_bytes - weights / tp - OVERHEAD_BYTES_PER_GPU
    return free, kv_bytes_per_token(model, dtype, tp)


def _valid_tps(model: ModelArch, gpus_per_node: int) -> list[int]:
    return [t for t in TP_CHOICES if t <= gpus_per_node and model.attention_heads % t == 0]


def _smallest_fitting_tp(
    model: ModelArch, gpu: GPU, dtype: str, util: float, max_len: int, gpus_per_node: int
) -> int | None:
    for tp in _valid_tps(model, gpus_per_node):
        free, per_tok = _fits(model, gpu, dtype, tp, util, max_len)
        if free >= MIN_SEQUENCES * max_len * per_tok:
            return tp
    return None


def _suggest_fixes(
    model: ModelArch, gpu: GPU, dtype: str, util: float, max_len: int, gpus_per_node: int
) -> tuple[str, ...]:
    fixes: list[str] = []
    for q in ("fp8", "int4"):
        if BYTES_PER_PARAM[q] < BYTES_PER_PARAM[dtype]:
            tp = _smallest_fitting_tp(model, gpu, q, util, max_len, gpus_per_node)
            if tp is not None:
                fixes.append(f"quantize: model.dtype={q} fits with TP {tp}")
                break
    bigger = sorted((g for g in GPUS.values() if g.memory_gib > gpu.memory_gib), key=lambda g: g.memory_gib)
    for g in bigger:
        tp = _smallest_fitting_tp(model, g, dtype, util, max_len, gpus_per_node)
        if tp is not None:
            fixes.append(f"a bigger GPU: accelerator.type={g.name} fits with TP {tp}")
            break
    if max_len > 4096 and _smallest_fitting_tp(model, gpu, dtype, util, 4096, gpus_per_node) is not None:
        fixes.append("a shorter context: model.maxModelLen=4096 fits")
    weights = model.parameters * BYTES_PER_PARAM[dtype]
    per_node = gpus_per_node * (util * gpu.memory_bytes - OVERHEAD_BYTES_PER_GPU)
    nodes = max(2, math.ceil(weights * 1.25 / per_node))
    fixes.append(
        f"pipeline parallel across {nodes} nodes (--pipeline-parallel-size {nodes}; not managed by llmfleet yet)"
    )
    return tuple(fixes)


def size(spec: LLMDeploymentSpec) -> Sizing:
    """Resolve TP (or check a hand-set TP) and compute KV capacity and cost for one replica."""
    model = resolve_model(spec)
    gpu = resolve_gpu(spec)
    dtype = resolve_dtype(spec.model.dtype, gpu)
    util = spec.engine.gpu_memory_utilization
    max_len = spec.model.max_model_len
    if model.max_context is not None and max_len > model.max_context:
        raise SizingError(
            "spec.model.maxModelLen",
            f"maxModelLen {max_len} exceeds {model.name}'s context of {model.max_context} tokens "
            f"(max_position_embeddings); vLLM refuses to start with it. Set maxModelLen to {model.max_context} or less.",
            (f"maxModelLen={model.max_context}",),
        )
    per_node = spec.accelerator.gpus_per_node
    requested = spec.engine.tensor_parallel_size

    if requested == "auto":
        tp = _smallest_fitting_tp(model, gpu, dtype, util, max_len, per_node)
        if tp is None:
            fixes = _suggest_fixes(model, gpu, dtype, util, max_len, per_node)
            weights_gib = model.parameters * BYTES_PER_PARAM[dtype] / GIB
            raise SizingError(
                "spec.engine.tensorParallelSize",
                f"{model.name} in {dtype} ({weights_gib:.0f} GiB of weights) with maxModelLen {max_len} does not fit "
                f"on one node of {per_node}× {gpu.name}. Smallest fix: {fixes[0]}"
                + (f"; or {'; or '.join(fixes[1:])}" if len(fixes) > 1 else ""),
                fixes,
            )
    else:
        tp = int(requested)
        if tp > per_node:
            raise SizingError(
                "spec.engine.tensorParallelSize",
                f"tensorParallelSize {tp} exceeds accelerator.gpusPerNode {per_node}",
            )
        if model.attention_heads % tp:
            raise SizingError(
                "spec.engine.tensorParallelSize",
                f"tensorParallelSize {tp} does not divide the model's {model.attention_heads} attention heads; "
                f"valid: {', '.join(map(str, _valid_tps(model, per_node)))}",
            )
        free, per_tok = _fits(model, gpu, dtype, tp, util, max_len)
        if free < max_len * per_tok:
            raise SizingError(
                "spec.engine.tensorParallelSize",
                f"tensorParallelSize {tp} leaves no room for one {max_len}-token sequence on {gpu.name}; "
                "use auto or a larger TP",
            )

    free, per_tok = _fits(model, gpu, dtype, tp, util, max_len)
    capacity = int(free // per_tok)
    return Sizing(
        model=model,
        gpu=gpu,
        dtype=dtype,
        tensor_parallel_size=tp,
        weights_bytes=model.parameters * BYTES_PER_PARAM[dtype],
        kv_bytes_per_token=kv_bytes_per_token(model, dtype, 1),
        kv_bytes_per_token_per_gpu=per_tok,
        kv_capacity_tokens=capacity,
        max_concurrent_sequences=capacity // max_len,
        max_model_len=max_len,
        on_demand_per_replica_hour=round(tp * gpu.on_demand_per_hour, 4),
        spot_per_replica_hour=round(tp * gpu.spot_per_hour, 4),
    )
