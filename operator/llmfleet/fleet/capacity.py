"""What one engine replica can do: its performance profile (from the CR's model, TP and GPU) and the token
capacity the autoscaler sizes the fleet with. The fleet simulator runs the same profile step by step.

Calibration for Llama-3-8B bf16 on one H100-80GB (ARCHITECTURE.md §4, public vLLM benchmarks):
prefill ≈ 20k tokens/s (TTFT ≈ 55 ms for a 1k-token prompt at no load), decode step 7.5 ms at batch 1
rising to ≈ 25 ms at batch 128. Other models and GPUs scale by (parameters / TP) / relative GPU speed.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmfleet.api.catalog import GPU
from llmfleet.api.sizing import Sizing, SizingError, size
from llmfleet.api.v1alpha1 import LLMDeploymentSpec

DECODE_STEP_TARGET_S = (
    0.04  # decode capacity is counted at the batch whose step stays under this (25 tokens/s)
)
REF_PARAMS = 8.03e9


def vllm_batch_defaults(gpu: GPU) -> tuple[int, int]:
    """vLLM 0.33's defaults for its OpenAI server by GPU (EngineArgs.get_batch_defaults): max_num_seqs and
    max_num_batched_tokens. 160 GiB and up: 1024 and 16384; 70 GiB and up but not an A100 (H100, H200): 1024 and
    8192; anything else: 256 and 2048."""
    if gpu.memory_gib >= 160:
        return 1024, 16384
    if gpu.memory_gib >= 70 and "a100" not in gpu.name.lower():
        return 1024, 8192
    return 256, 2048


@dataclass(frozen=True)
class EngineProfile:
    prefill_tokens_per_s: float = 20_000.0
    decode_base_s: float = 0.0075
    decode_per_seq_s: float = 0.000137
    kv_capacity_tokens: int = 450_000
    max_num_seqs: int = 256
    max_batched_tokens: int = 8192
    prefix_caching: bool = True

    @classmethod
    def from_sizing(
        cls,
        sizing: Sizing,
        max_num_seqs: int | None = None,
        prefix_caching: bool = True,
        max_batched_tokens: int | None = None,
    ) -> EngineProfile:
        """Scale the reference profile by model size per GPU and GPU speed; batch limits as given, else vLLM's
        defaults for the GPU."""
        default_seqs, default_tokens = vllm_batch_defaults(sizing.gpu)
        per_gpu = sizing.model.parameters / sizing.tensor_parallel_size
        # Tensor parallel is not free: ~10% communication overhead per doubling beyond one GPU.
        tp_overhead = 1.0 + 0.1 * (sizing.tensor_parallel_size.bit_length() - 1)
        factor = (per_gpu / REF_PARAMS) * tp_overhead / sizing.gpu.relative_speed
        ref = cls()
        return cls(
            prefill_tokens_per_s=ref.prefill_tokens_per_s / factor,
            decode_base_s=ref.decode_base_s * factor,
            decode_per_seq_s=ref.decode_per_seq_s * factor,
            kv_capacity_tokens=sizing.kv_capacity_tokens,
            max_num_seqs=max_num_seqs or default_seqs,
            max_batched_tokens=max_batched_tokens or default_tokens,
            prefix_caching=prefix_caching,
        )

    @classmethod
    def for_spec(cls, spec: LLMDeploymentSpec, sizing: Sizing) -> EngineProfile:
        """The profile of one replica of a CR: its sizing, prefix caching and any --max-num-seqs or
        --max-num-batched-tokens in extraArgs (else vLLM's defaults for the GPU)."""
        seqs = tokens = None
        for arg in spec.engine.extra_args:
            if arg.startswith("--max-num-seqs="):
                seqs = int(arg.split("=", 1)[1])
            elif arg.startswith("--max-num-batched-tokens="):
                tokens = int(arg.split("=", 1)[1])
        return cls.from_sizing(
            sizing,
            max_num_seqs=seqs,
            prefix_caching=spec.engine.enable_prefix_caching,
            max_batched_tokens=tokens,
        )

    def step_seconds(self, decoding: int, prefill_tokens: int) -> float:
        return (
            self.decode_base_s + self.decode_per_seq_s * decoding + prefill_tokens / self.prefill_tokens_per_s
        )


@dataclass(frozen=True)
class Capacity:
    """What one replica can do, in tokens per second: prefill, and decode at the batch whose step stays under
    ``DECODE_STEP_TARGET_S``."""

    prefill_tps: float
    decode_tps: float

    def replicas_for(self, prompt_tps: float | None, generation_tps: float | None) -> float | None:
        """A fleet's token work in replica-equivalents (time shares of prefill and decode), if rates are known."""
        if prompt_tps is None or generation_tps is None:
            return None
        return prompt_tps / self.prefill_tps + generation_tps / self.decode_tps


def capacity_of(profile: EngineProfile) -> Capacity:
    """One replica's token capacity from its performance model: decode counted at the batch whose step time
    stays under DECODE_STEP_TARGET_S (bounded by max_num_seqs), prefill at its rate."""
    batch = (DECODE_STEP_TARGET_S - profile.decode_base_s) / profile.decode_per_seq_s
    batch = max(1.0, min(float(profile.max_num_seqs), batch))
    return Capacity(
        prefill_tps=profile.prefill_tokens_per_s, decode_tps=batch / profile.step_seconds(int(batch), 0)
    )


def replica_capacity(spec: LLMDeploymentSpec) -> Capacity | None:
    """One replica's token capacity for a CR; None when the spec cannot be sized."""
    try:
        return capacity_of(EngineProfile.for_spec(spec, size(spec)))
    except SizingError:
        return None
