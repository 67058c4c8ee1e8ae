"""Sizing: tensor-parallel choice, KV capacity and cost, table-driven."""

from __future__ import annotations

import pytest

from llmfleet.api.catalog import GIB, MODELS
from llmfleet.api.sizing import SizingError, kv_bytes_per_token, size
from llmfleet.api.v1alpha1 import LLMDeploymentSpec


def spec(model: str, gpu: str, dtype: str = "bfloat16", **engine) -> LLMDeploymentSpec:
    return LLMDeploymentSpec.model_validate(
        {"model": {"name": model, "dtype": dtype}, "accelerator": {"type": gpu}, "engine": engine}
    )


L8 = "meta-llama/Meta-Llama-3-8B-Instruct"
L70 = "meta-llama/Meta-Llama-3-70B-Instruct"
L405 = "meta-llama/Llama-3.1-405B-Instruct"


@pytest.mark.parametrize(
    ("model", "gpu", "dtype", "tp"),
    [
        (L8, "H100-80GB", "bfloat16", 1),
        (L70, "H100-80GB", "bfloat16", 4),
        (L70, "A100-40GB", "bfloat16", 8),
        (L405, "H100-80GB", "fp8", 8),
        (L70, "H200-141GB", "bfloat16", 2),
        (L8, "L4-24GB", "bfloat16", 1),
        (L8, "T4-16GB", "float16", 2),
        ("Qwen/Qwen2.5-72B-Instruct", "H100-80GB", "int4", 1),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", "A100-80GB", "bfloat16", 2),
    ],
)
def test_auto_tensor_parallel_is_the_smallest_that_fits(model: str, gpu: str, dtype: str, tp: int) -> None:
    assert size(spec(model, gpu, dtype)).tensor_parallel_size == tp


def test_405b_bf16_on_h100_does_not_fit_and_names_the_smallest_fix() -> None:
    with pytest.raises(SizingError) as err:
        size(spec(L405, "H100-80GB"))
    assert err.value.field == "spec.engine.tensorParallelSize"
    assert "does not fit on one node" in str(err.value)
    assert err.value.fixes[0] == "quantize: model.dtype=fp8 fits with TP 8"
    assert any("H200-141GB" in f for f in err.value.fixes)
    assert any("pipeline parallel" in f for f in err.value.fixes)


@pytest.mark.parametrize(
    ("model", "kib"),
    [(L8, 128), (L70, 320), (L405, 504)],
)
def test_kv_bytes_per_token_matches_published_figures(model: str, kib: int) -> None:
    assert kv_bytes_per_token(MODELS[model], "bfloat16") == kib * 1024


def test_tp_must_divide_attention_heads() -> None:
    # Qwen2.5-7B has 28 heads: TP 8 is not valid.
    with pytest.raises(SizingError, match="does not divide the model's 28 attention heads; valid: 1, 2, 4"):
        size(spec("Qwen/Qwen2.5-7B-Instruct", "H100-80GB", tensorParallelSize=8))


def test_hand_set_tp_larger_than_node_is_rejected() -> None:
    s = LLMDeploymentSpec.model_validate(
        {"model": {"name": L8}, "engine": {"tensorParallelSize": 8}, "accelerator": {"gpusPerNode": 4}}
    )
    with pytest.raises(SizingError, match="exceeds accelerator.gpusPerNode 4"):
        size(s)


def test_hand_set_tp_too_small_is_rejected() -> None:
    with pytest.raises(SizingError, match="leaves no room"):
        size(spec(L70, "H100-80GB", tensorParallelSize=1))


def test_kv_capacity_and_concurrency_follow_memory() -> None:
    s = size(spec(L8, "H100-80GB"))
    free = 0.9 * 80 * GIB - 8.03e9 * 2 - 2 * GIB
    assert s.kv_capacity_tokens == int(free // (128 * 1024))
    assert s.max_concurrent_sequences == s.kv_capacity_tokens // 8192
    longer = size(LLMDeploymentSpec.model_validate({"model": {"name": L8, "maxModelLen": 8192}}))
    shorter = size(LLMDeploymentSpec.model_validate({"model": {"name": L8, "maxModelLen": 2048}}))
    assert (
        shorter.max_concurrent_sequences
        == shorter.kv_capacity_tokens // 2048
        > s.max_concurrent_sequences // 2
    )
    assert longer.max_concurrent_sequences == s.max_concurrent_sequences


def test_cost_per_replica_hour_is_tp_times_gpu_price_and_overridable() -> None:
    s = size(spec(L70, "H100-80GB"))
    assert s.on_demand_per_replica_hour == pytest.approx(4 * 6.88)
    assert s.spot_per_replica_hour < s.on_demand_per_replica_hour * 0.5
    custom = LLMDeploymentSpec.model_validate(
        {
            "model": {"name": L70},
            "accelerator": {
                "type": "H100-80GB",
                "pricing": {"onDemandPerGpuHour": 4.0, "spotPerGpuHour": 1.5},
            },
        }
    )
    got = size(custom)
    assert (got.on_demand_per_replica_hour, got.spot_per_replica_hour) == (16.0, 6.0)
    assert got.gpu.price_source == "spec.accelerator.pricing"


def test_model_outside_catalog_needs_architecture() -> None:
    with pytest.raises(SizingError) as err:
        size(spec("acme/secret-model-13b", "H100-80GB"))
    assert err.value.field == "spec.model.architecture"
    custom = LLMDeploymentSpec.model_validate(
        {
            "model": {
                "name": "acme/model-13b",
                "parameters": 13e9,
                "architecture": {"layers": 40, "hiddenSize": 5120, "attentionHeads": 40},
            },
        }
    )
    got = size(custom)
    assert got.tensor_parallel_size == 1
    assert got.kv_bytes_per_token == 2 * 40 * 40 * 128 * 2


def test_unknown_gpu_names_the_known_ones() -> None:
    with pytest.raises(SizingError, match="unknown GPU type 'B300'.*H100-80GB"):
        size(spec(L8, "B300"))


def test_model_found_by_path_suffix() -> None:
    s = size(spec("s3://models/meta-llama/Meta-Llama-3-8B-Instruct", "H100-80GB"))
    assert s.model.layers == 32


@pytest.mark.parametrize(
    ("gpu", "want"), [("T4-16GB", "float16"), ("H100-80GB", "bfloat16"), ("A10G-24GB", "bfloat16")]
)
def test_auto_dtype_is_bfloat16_only_where_the_gpu_has_it(gpu: str, want: str) -> None:
    """vLLM refuses bfloat16 below compute capability 8.0: a T4 deployment must run float16 or never starts."""
    s = size(LLMDeploymentSpec.model_validate({"model": {"name": L8}, "accelerator": {"type": gpu}}))
    assert s.dtype == want


@pytest.mark.parametrize("dtype", ["bfloat16", "fp8"])
def test_a_dtype_the_gpu_lacks_is_refused_naming_the_field_and_the_fix(dtype: str) -> None:
    with pytest.raises(SizingError) as err:
        size(
            LLMDeploymentSpec.model_validate(
                {"model": {"name": L8, "dtype": dtype}, "accelerator": {"type": "T4-16GB"}}
            )
        )
    assert err.value.field == "spec.model.dtype" and "float16" in str(err.value) and "7.5" in str(err.value)


def test_max_model_len_beyond_the_models_context_is_refused() -> None:
    with pytest.raises(SizingError) as err:
        size(LLMDeploymentSpec.model_validate({"model": {"name": L8, "maxModelLen": 32768}}))
    assert err.value.field == "spec.model.maxModelLen" and "8192" in str(err.value)
    assert (
        size(
            LLMDeploymentSpec.model_validate(
                {"model": {"name": "meta-llama/Llama-3.1-8B-Instruct", "maxModelLen": 32768}}
            )
        ).max_model_len
        == 32768
    )
    custom = {
        "name": "org/custom",
        "parameters": 7e9,
        "maxModelLen": 8192,
        "architecture": {
            "layers": 32,
            "hiddenSize": 4096,
            "attentionHeads": 32,
            "maxPositionEmbeddings": 4096,
        },
    }
    with pytest.raises(SizingError, match="4096"):
        size(LLMDeploymentSpec.model_validate({"model": custom}))
