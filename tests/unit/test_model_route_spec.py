"""spec.routing: what the API refuses (naming the field), what the gateway is configured with, and the network
paths it opens: the front gateway reaches the member's engines, and the member's engines admit it."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
import pytest

from llmfleet.api.load import SpecError, parse_object
from llmfleet.api.sizing import size
from llmfleet.cache.embedding import HashEmbedder
from llmfleet.gateway.config import GatewayConfig, RouteConfig
from llmfleet.gateway.models import ModelRoute, prompt_texts
from llmfleet.gateway.routing import Router
from llmfleet.modelroute import Bank
from llmfleet.render import render_all
from llmfleet.render.gateway import gateway_config


def _obj(minimal_obj: dict, routing: dict, **gateway: object) -> dict:
    minimal_obj = copy.deepcopy(minimal_obj)
    minimal_obj["spec"]["routing"] = routing
    if gateway:
        minimal_obj["spec"]["gateway"] = gateway
    return minimal_obj


@pytest.mark.parametrize(
    ("routing", "message"),
    [
        ({"rules": [{"to": "nobody"}]}, "rules[0].to: 'nobody' is not self, external, auto or a member"),
        ({"rules": [{"to": "auto"}]}, "rules[0].to: auto needs routing.auto"),
        ({"default": "ghost"}, "default: 'ghost' is not self, external or a member"),
        ({"members": [{"deployment": "a"}, {"deployment": "a"}]}, "each deployment may be named once"),
        ({"members": [{"deployment": "self"}]}, "reserved names"),
        ({"auto": {"small": "self", "large": "self"}}, "small and large must differ"),
        ({"members": [{"deployment": "b"}], "auto": {"small": "external", "large": "self"}}, "auto.small"),
        ({"members": [{"deployment": "Bad_Name"}]}, "deployment"),
        ({"rules": [{"to": "external"}]}, "gateway.external.use is never"),
    ],
)
def test_the_api_refuses_a_route_naming_the_field(minimal_obj: dict, routing: dict, message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_object(_obj(minimal_obj, routing))
    assert message in str(err.value)


def test_the_gateway_config_lists_self_and_each_member_with_their_engines(minimal_obj: dict) -> None:
    obj = parse_object(
        _obj(
            minimal_obj,
            {
                "members": [
                    {"deployment": "small8b"},
                    {"deployment": "tiny", "model": "tiny-served", "outputTokens": {"max": 256}},
                ],
                "rules": [{"match": {"keys": ["batch"], "tasks": ["code"]}, "to": "small8b"}],
                "auto": {"small": "small8b", "large": "self"},
            },
        )
    )
    from llmfleet.fleet.pools import split_replicas
    from llmfleet.render.common import RenderInput

    cfg = gateway_config(RenderInput(obj, size(obj.spec), split_replicas(obj.spec)))
    route = GatewayConfig.model_validate(cfg).route
    assert route is not None
    assert [(m.name, m.model) for m in route.members] == [
        ("self", "demo"),
        ("small8b", "small8b"),
        ("tiny", "tiny-served"),
    ]
    assert route.members[1].engines.endpoint_slice_selector == "kubernetes.io/service-name=small8b-engine"
    assert route.members[1].output_tokens is None and route.members[2].output_tokens is not None
    assert route.members[2].output_tokens.max == 256
    assert route.auto is not None and route.auto.threshold == 0.175
    assert "route" not in gateway_config(
        RenderInput(parse_object(minimal_obj), size(obj.spec), split_replicas(obj.spec))
    )


def test_network_paths_open_from_the_front_gateway_to_the_members_engines(minimal_obj: dict) -> None:
    front = parse_object(_obj(minimal_obj, {"members": [{"deployment": "small8b"}]}))
    out = {f"{m['kind']}/{m['metadata']['name']}": m for m in render_all(front, size(front.spec))}
    labels = out["Deployment/demo-gateway"]["spec"]["template"]["metadata"]["labels"]
    assert labels["routes-to.llmfleet.io/small8b"] == "true"
    egress = out["NetworkPolicy/demo-gateway"]["spec"]["egress"][0]["to"]
    assert {
        "podSelector": {
            "matchLabels": {"llmfleet.io/deployment": "small8b", "app.kubernetes.io/component": "engine"}
        }
    } in egress
    minimal_obj["metadata"]["name"] = "small8b"
    member = parse_object(minimal_obj)
    ingress = {f"{m['kind']}/{m['metadata']['name']}": m for m in render_all(member, size(member.spec))}[
        "NetworkPolicy/small8b-engine"
    ]["spec"]["ingress"][0]["from"]
    assert {
        "podSelector": {
            "matchLabels": {"routes-to.llmfleet.io/small8b": "true", "app.kubernetes.io/component": "gateway"}
        }
    } in ingress


def test_prompt_texts_read_the_last_user_turn_and_count_every_turn() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "image_url"}]},
        ]
    }
    assert prompt_texts(body) == ("hello", len("be brief") + len("hello"))
    assert prompt_texts({"prompt": ["abc", "d"]}) == ("abc", 3)
    assert prompt_texts({"prompt": 5}) == ("", 0)


def test_a_bank_built_with_another_encoder_is_refused_at_start() -> None:
    path = Path(tempfile.mkdtemp()) / "b.npz"
    Bank(np.eye(4, dtype=np.float32), np.zeros(4, np.float32), np.ones(4, np.float32), "other-encoder").save(
        path
    )
    cfg = RouteConfig.model_validate(
        {
            "members": [{"name": "self", "model": "m"}, {"name": "s", "model": "s"}],
            "auto": {"small": "s", "large": "self", "bank": str(path)},
        }
    )
    route = ModelRoute(cfg, {"self": Router(), "s": Router()}, False, HashEmbedder())
    assert route.needs_encoder == "other-encoder"
    with pytest.raises(ValueError, match="other-encoder"):
        route.check_encoder()
    # The shipped bank is n-grams: no encoder needed at all.
    cfg = RouteConfig.model_validate(
        {
            "members": [{"name": "self", "model": "m"}, {"name": "s", "model": "s"}],
            "auto": {"small": "s", "large": "self"},
        }
    )
    route = ModelRoute(cfg, {"self": Router(), "s": Router()}, False, None)
    assert route.needs_encoder is None
    route.check_encoder()
