"""The GPU and model catalogs: facts sizing and costing start from, each with its source.

Prices are list prices per GPU-hour and move often; every one can be overridden in the CR
(``spec.accelerator.pricing``). Spot prices are typical, not quoted: spot markets float.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gib: float
    relative_speed: float  # decode/prefill throughput relative to H100-80GB, from public vLLM benchmarks
    on_demand_per_hour: float  # USD per GPU-hour
    spot_per_hour: float  # USD per GPU-hour
    price_source: str
    compute_capability: float = 9.0  # CUDA compute capability (NVIDIA's table): bfloat16 needs >= 8.0

    @property
    def bfloat16(self) -> bool:
        """vLLM refuses bfloat16 below compute capability 8.0 (pre-Ampere: T4, V100)."""
        return self.compute_capability >= 8.0

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * GIB


_AWS = (
    "AWS EC2 on-demand list price, us-east-1, per GPU (instance price / GPUs), after the June 2025 price cut"
)
_SPOT = "spot: typical discount of 60% seen on AWS/GCP/Azure (ranges 60-91%)"

GPUS: dict[str, GPU] = {
    g.name: g
    for g in [
        GPU(
            "H100-80GB",
            80,
            1.00,
            6.88,
            2.75,
            f"{_AWS} (p5.48xlarge $55.04/8); {_SPOT}",
            compute_capability=9.0,
        ),
        GPU(
            "H200-141GB",
            141,
            1.25,
            7.91,
            3.16,
            f"{_AWS} (p5en.48xlarge $63.30/8); {_SPOT}",
            compute_capability=9.0,
        ),
        GPU(
            "A100-80GB",
            80,
            0.45,
            3.43,
            1.37,
            f"{_AWS} (p4de.24xlarge $27.45/8); {_SPOT}",
            compute_capability=8.0,
        ),
        GPU(
            "A100-40GB",
            40,
            0.40,
            2.75,
            1.10,
            f"{_AWS} (p4d.24xlarge $21.96/8); {_SPOT}",
            compute_capability=8.0,
        ),
        GPU(
            "L40S-48GB", 48, 0.35, 1.86, 0.74, f"{_AWS} (g6e.xlarge $1.861); {_SPOT}", compute_capability=8.9
        ),
        GPU("L4-24GB", 24, 0.12, 0.80, 0.32, f"{_AWS} (g6.xlarge $0.805); {_SPOT}", compute_capability=8.9),
        GPU("A10G-24GB", 24, 0.15, 1.01, 0.40, f"{_AWS} (g5.xlarge $1.006); {_SPOT}", compute_capability=8.6),
        GPU("T4-16GB", 16, 0.05, 0.53, 0.21, f"{_AWS} (g4dn.xlarge $0.526); {_SPOT}", compute_capability=7.5),
    ]
}


@dataclass(frozen=True)
class ModelArch:
    name: str
    parameters: float
    layers: int
    hidden_size: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    max_context: int | None = None  # max_position_embeddings: the longest maxModelLen vLLM accepts
    source: str = "the model's config.json on its model card"


MODELS: dict[str, ModelArch] = {
    m.name: m
    for m in [
        ModelArch("meta-llama/Meta-Llama-3-8B-Instruct", 8.03e9, 32, 4096, 32, 8, 128, 8192),
        ModelArch("meta-llama/Llama-3.1-8B-Instruct", 8.03e9, 32, 4096, 32, 8, 128, 131072),
        ModelArch("meta-llama/Meta-Llama-3-70B-Instruct", 70.6e9, 80, 8192, 64, 8, 128, 8192),
        ModelArch("meta-llama/Llama-3.1-70B-Instruct", 70.6e9, 80, 8192, 64, 8, 128, 131072),
        ModelArch("meta-llama/Llama-3.1-405B-Instruct", 405.9e9, 126, 16384, 128, 8, 128, 131072),
        ModelArch("mistralai/Mistral-7B-Instruct-v0.3", 7.25e9, 32, 4096, 32, 8, 128, 32768),
        ModelArch("mistralai/Mixtral-8x7B-Instruct-v0.1", 46.7e9, 32, 4096, 32, 8, 128, 32768),
        ModelArch("Qwen/Qwen2.5-7B-Instruct", 7.62e9, 28, 3584, 28, 4, 128, 32768),
        ModelArch("Qwen/Qwen2.5-32B-Instruct", 32.8e9, 64, 5120, 40, 8, 128, 32768),
        ModelArch("Qwen/Qwen2.5-72B-Instruct", 72.7e9, 80, 8192, 64, 8, 128, 32768),
    ]
}


def find_model(name: str) -> ModelArch | None:
    """The catalog entry for a model source: an HF id, or a path/URL ending in one (case-insensitive)."""
    key = name.strip().rstrip("/").lower()
    for model_name, arch in MODELS.items():
        lowered = model_name.lower()
        if key == lowered or key.endswith("/" + lowered) or key.endswith("/" + lowered.split("/")[1]):
            return arch
    return None


BYTES_PER_PARAM: dict[str, float] = {"float16": 2, "bfloat16": 2, "fp8": 1, "int8": 1, "int4": 0.5}
# The KV cache stays in 16-bit unless the engine is told otherwise.
KV_BYTES_PER_ELEMENT: dict[str, float] = {"float16": 2, "bfloat16": 2, "fp8": 2, "int8": 2, "int4": 2}
