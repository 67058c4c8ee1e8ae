"""The LLMDeployment API: defaults, cross-field rules and error messages that name the field."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmfleet.api import vllm_flags
from llmfleet.api.load import SpecError, load_documents, parse_object
from llmfleet.api.quantity import parse_duration, parse_quantity
from llmfleet.api.v1alpha1 import extra_arg_problem


def with_spec(base: dict, **patch) -> dict:
    obj = {**base, "spec": {**base["spec"], **patch}}
    return obj


def errors_of(obj: dict) -> list[str]:
    with pytest.raises(SpecError) as err:
        parse_object(obj)
    return [str(e) for e in err.value.errors]


def test_defaults_fill_a_minimal_spec(minimal_obj: dict) -> None:
    obj = parse_object(minimal_obj)
    s = obj.spec
    assert s.engine.tensor_parallel_size == "auto"
    assert s.engine.enable_prefix_caching is True
    assert s.cache.exact.enabled and not s.cache.semantic.enabled  # the semantic tier is opt-in
    assert s.cache.semantic.threshold == 0.95
    assert s.gateway.routing == "prefix-affinity"
    assert s.pools.spot.enabled and s.pools.spot.fallback_to_on_demand
    assert obj.served_name == "demo"


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (
            {"pools": {"onDemand": {"minReplicas": 5, "maxReplicas": 2}}},
            "spec.pools.onDemand: minReplicas (5) must be <= maxReplicas (2)",
        ),
        (
            {"pools": {"spot": {"maxReplicas": -1}}},
            "spec.pools.spot.maxReplicas: Input should be greater than or equal to 0",
        ),
        (
            {"autoscaling": {"minReplicas": 9, "maxReplicas": 3}},
            "spec.autoscaling: minReplicas (9) must be <= maxReplicas (3)",
        ),
        (
            {"cache": {"semantic": {"threshold": 0}}},
            "spec.cache.semantic.threshold: Input should be greater than 0",
        ),
        (
            {"cache": {"semantic": {"threshold": 1.2}}},
            "spec.cache.semantic.threshold: Input should be less than or equal to 1",
        ),
        (
            {"cache": {"semantic": {"maxFalseHitRate": 0.5}}},
            "spec.cache.semantic.maxFalseHitRate: Input should be less than or equal to 0.2",
        ),
        (
            {"cache": {"semantic": {"maxFalseHitRate": 0}}},
            "spec.cache.semantic.maxFalseHitRate: Input should be greater than 0",
        ),
        (
            {"engine": {"tensorParallelSize": 3}},
            "spec.engine.tensorParallelSize: Input should be 'auto', 1, 2, 4 or 8",
        ),
        (
            {"engine": {"extraArgs": ["--max-num-seqs=64", "--tensor-parallel-size=2"]}},
            "spec.engine: extraArgs[1] '--tensor-parallel-size=2' is vLLM's --tensor-parallel-size, which the operator sets from spec.engine.tensorParallelSize",
        ),
        (
            {"model": {"name": "x", "dtype": "fp4"}},
            "spec.model.dtype: Input should be 'auto', 'float16', 'bfloat16', 'fp8', 'int8' or 'int4'",
        ),
        (
            {"autoscaling": {"scaleUpWindow": "soon"}},
            "spec.autoscaling.scaleUpWindow: 'soon' is not a duration",
        ),
        (
            {"gateway": {"external": {"use": "general"}}},
            "spec.gateway.external: baseURL and model are required unless use is never",
        ),
        (
            {"cache": {"redis": {"mode": "external"}}},
            "spec.cache.redis: external Redis needs url or secretRef",
        ),
        (
            {"engine": {"drain": {"preStopSleep": "30s", "shutdownTimeout": "100s"}}},
            "does not fit the 120s spot notice",
        ),
    ],
)
def test_invalid_specs_name_the_field(minimal_obj: dict, patch: dict, expected: str) -> None:
    msgs = errors_of(with_spec(minimal_obj, **patch))
    assert any(expected in m for m in msgs), msgs


def test_unknown_field_lists_the_allowed_ones(minimal_obj: dict) -> None:
    msgs = errors_of(with_spec(minimal_obj, pools={"spot": {"maxReplica": 3}}))
    assert msgs[0].startswith(
        "spec.pools.spot.maxReplica: unknown field; allowed here: enabled, maxReplicas,"
    )


def test_yaml_syntax_error_names_line() -> None:
    with pytest.raises(SpecError, match=r"cr.yaml: invalid YAML at line 4, column 1"):
        load_documents("apiVersion: llmfleet.io/v1alpha1\nkind: LLMDeployment\nspec: [\n", "cr.yaml")


def test_multi_document_yaml_skips_other_kinds(minimal_obj: dict) -> None:
    import yaml

    text = yaml.safe_dump_all(
        [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "k"}}, minimal_obj]
    )
    assert [o.metadata.name for o in load_documents(text)] == ["demo"]


@pytest.mark.parametrize(("text", "seconds"), [("500ms", 0.5), ("30s", 30), ("5m", 300), ("1h30m", 5400)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "value"), [("2Gi", 2 * 2**30), ("500m", 0.5), ("4", 4), ("1G", 1e9)])
def test_quantities(text: str, value: float) -> None:
    assert parse_quantity(text) == value


# extraArgs: every spelling argparse (as vLLM configures it) reads as an owned or breaking flag is refused.
_LONG = sorted(
    {o for fs in vllm_flags.OWNED.values() for o in fs if o.startswith("--")}
    | {o for fs, _ in vllm_flags.BREAKING.values() for o in fs}
)


@given(
    option=st.sampled_from(_LONG),
    cut=st.integers(0, 6),
    underscores=st.lists(st.booleans(), min_size=8, max_size=8),
    value=st.none() | st.text(max_size=12),
    dotted=st.booleans(),
)
@settings(max_examples=400, deadline=None)
def test_any_spelling_of_an_owned_or_breaking_flag_is_refused(
    option, cut, underscores, value, dotted
) -> None:
    body = option[2:]
    body = body[: max(1, len(body) - cut)]  # argparse takes any prefix that is not ambiguous
    body = "".join(
        "_" if c == "-" and underscores[i % 8] else c for i, c in enumerate(body)
    )  # vLLM reads _ as -
    arg = "--" + body + (".key" if dotted else "") + ("" if value is None else "=" + value)
    assert extra_arg_problem(arg) is not None, arg


@given(
    flag=st.from_regex(r"--[a-z][a-z0-9-]{1,30}", fullmatch=True),
    key=st.from_regex(r"[a-z_][a-z0-9_.]{0,12}", fullmatch=True),
    value=st.none() | st.text(max_size=12),
)
@settings(max_examples=200, deadline=None)
def test_a_dotted_key_is_refused_on_any_flag(flag: str, key: str, value: str | None) -> None:
    """vLLM rewrites --opt.key=v into --opt '{"key": v}'; after a flag that takes no value (--enforce-eager) the
    JSON is read as the positional model to serve. vLLM's own parser showed it (test_vllm_conformance)."""
    arg = f"{flag}.{key}" + ("" if value is None else "=" + value)
    problem = extra_arg_problem(arg)
    assert problem is not None and "dotted key" in problem
