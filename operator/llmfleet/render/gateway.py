"""Gateway children: config, ServiceAccount and RBAC for endpoint discovery, Deployment, Service and its
PodDisruptionBudget."""

from __future__ import annotations

import json
from typing import Any

from llmfleet.api.quantity import parse_duration
from llmfleet.api.v1alpha1 import ROUTE_SELF
from llmfleet.fleet import names
from llmfleet.fleet.names import (
    ENGINE_PORT,
    GATEWAY_PORT,
    SPEC_HASH_ANNOTATION,
    engine_pod_selector,
    selector_labels,
)
from llmfleet.render.cache import AUTH_USER, PASSWORD_KEY, auth_hash, managed, redis_url
from llmfleet.render.common import (
    Manifest,
    RenderInput,
    disruption_budget,
    metadata,
    restricted_container,
    restricted_pod,
    scrape_annotations,
    stable_hash,
)

COMPONENT = names.GATEWAY
GATEWAY_UID = 10001  # the image's llmfleet user (Dockerfile)
CONFIG_KEY = "gateway.json"
REDIS_URL_ENV = "LLMFLEET_REDIS_URL"  # an external Redis's URL, from the user's Secret
REDIS_URL_ANNOTATION = "llmfleet.io/redis-url-hash"  # a change to that Secret rolls the gateways
REDIS_PASSWORD_ENV = "LLMFLEET_REDIS_PASSWORD"  # the managed Redis's password, from the cache-auth Secret
CONFIG_DIR = "/etc/llmfleet"
KEYS_DIR = "/etc/llmfleet/keys"
GATEWAY_MIN_READY_SECONDS = 5
LOAD_POLL_SECONDS = 0.25  # each gateway reads every engine's /load this often (the other gateways' share)  # a rollout's new gateway pod must stay ready this long before an old one goes


def _engines(inp: RenderInput, name: str) -> dict[str, Any]:
    """How the gateway finds deployment ``name``'s engines (this one's, or a route member's)."""
    return {
        "service": names.engine_service(name),
        "endpointSliceSelector": f"kubernetes.io/service-name={names.engine_service(name)}",
        "port": ENGINE_PORT,
        "discovery": inp.options.engine_discovery,
        "podSelector": engine_pod_selector(name),
        "loadPollSeconds": LOAD_POLL_SECONDS,
    }


def route_config(inp: RenderInput) -> dict[str, Any] | None:
    """The gateway's model route (spec.routing), None when it serves this deployment's model alone."""
    r = inp.obj.spec.routing
    if not r.active:
        return None
    members = [{"name": ROUTE_SELF, "model": inp.obj.served_name, "engines": _engines(inp, inp.name)}]
    members += [
        {
            "name": m.deployment,
            "model": m.model or m.deployment,
            "engines": _engines(inp, m.deployment),
            **(
                {"outputTokens": m.output_tokens.model_dump(by_alias=True, exclude_none=True)}
                if m.output_tokens is not None
                else {}
            ),
        }
        for m in r.members
    ]
    return {
        "members": members,
        "default": r.default,
        "rules": [
            {"match": rule.match.model_dump(by_alias=True, exclude_none=True), "to": rule.to}
            for rule in r.rules
        ],
        "auto": None if r.auto is None else r.auto.model_dump(by_alias=True),
    }


def gateway_config(inp: RenderInput) -> dict[str, Any]:
    """What the gateway process reads at start (the ConfigMap's content); pure data, no secrets."""
    spec = inp.obj.spec
    gw = spec.gateway
    cache = spec.cache
    return {
        "model": inp.obj.served_name,
        "namespace": inp.namespace,
        "engines": _engines(inp, inp.name),
        **({"route": route} if (route := route_config(inp)) is not None else {}),
        "routing": gw.routing,
        "auth": {"keysDir": KEYS_DIR if gw.auth.api_keys_secret_ref else None},
        "limits": gw.limits.model_dump(by_alias=True),
        "sensitivity": gw.sensitivity.model_dump(by_alias=True),
        "external": {
            "use": gw.external.use,
            "baseURL": gw.external.base_url,
            "model": gw.external.model,
            "apiKeyEnv": "LLMFLEET_EXTERNAL_API_KEY" if gw.external.api_key_secret_ref else None,
        },
        "cache": {
            "redisURL": redis_url(inp),
            "redisURLEnv": REDIS_URL_ENV if cache.redis.secret_ref else None,
            "redisUsername": AUTH_USER if managed(inp) else None,
            "redisPasswordEnv": REDIS_PASSWORD_ENV if managed(inp) else None,
            "redisTLS": cache.redis.mode == "external" and cache.redis.tls,
            "exact": {
                "enabled": cache.exact.enabled,
                "ttlSeconds": parse_duration(cache.exact.ttl),
                "replay": cache.exact.replay,
            },
            "semantic": {
                "enabled": cache.semantic.enabled,
                "threshold": cache.semantic.threshold,
                "embeddingModel": cache.semantic.embedding.model,
                "embeddingThreads": cache.semantic.embedding.threads,
                "maxFalseHitRate": cache.semantic.max_false_hit_rate,
            },
        },
        "outputTokens": gw.output_tokens.model_dump(by_alias=True, exclude_none=True),
        "tracing": {
            "endpoint": gw.tracing.endpoint,
            "sampleRatio": gw.tracing.sample_ratio,
            "serviceName": names.gateway(inp.name),
        },
    }


def gateway_configmap(inp: RenderInput) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(inp, names.gateway(inp.name), COMPONENT),
        "data": {CONFIG_KEY: json.dumps(gateway_config(inp), indent=2, sort_keys=True)},
    }


def gateway_service_account(inp: RenderInput) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(inp, names.gateway(inp.name), COMPONENT),
    }


def gateway_role(inp: RenderInput) -> Manifest:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata(inp, names.gateway(inp.name), COMPONENT),
        "rules": [
            {
                "apiGroups": ["discovery.k8s.io"],
                "resources": ["endpointslices"],
                "verbs": ["list", "watch"],  # discovery lists, then watches: no GET
            }
        ]
        + (
            [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]
            if inp.options.engine_discovery == "pods"
            else []
        ),
    }


def gateway_role_binding(inp: RenderInput) -> Manifest:
    name = names.gateway(inp.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(inp, name, COMPONENT),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": inp.namespace}],
    }


def gateway_deployment(inp: RenderInput) -> Manifest:
    spec = inp.obj.spec
    gw = spec.gateway
    name = names.gateway(inp.name)
    pod_labels = selector_labels(inp.name, COMPONENT)
    # The member deployments' engine NetworkPolicies admit gateway pods carrying their routes-to label.
    routes_to = {
        label: "true" for m in spec.routing.members if (label := names.routes_to_label(m.deployment))
    }
    env: list[dict[str, Any]] = [{"name": "LLMFLEET_LOG_FORMAT", "value": "json"}]
    if gw.external.api_key_secret_ref:
        env.append(
            {
                "name": "LLMFLEET_EXTERNAL_API_KEY",
                "valueFrom": {"secretKeyRef": {"name": gw.external.api_key_secret_ref, "key": "apiKey"}},
            }
        )
    if spec.cache.redis.secret_ref:
        ref = spec.cache.redis.secret_ref
        env.append({"name": REDIS_URL_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    if managed(inp):
        secret = {"name": names.cache_auth(inp.name), "key": PASSWORD_KEY}
        env.append({"name": REDIS_PASSWORD_ENV, "valueFrom": {"secretKeyRef": secret}})
    mounts = [{"name": "config", "mountPath": CONFIG_DIR + "/config", "readOnly": True}]
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": name}}]
    if gw.auth.api_keys_secret_ref:
        mounts.append({"name": "keys", "mountPath": KEYS_DIR, "readOnly": True})
        volumes.append({"name": "keys", "secret": {"secretName": gw.auth.api_keys_secret_ref}})
    template = {
        "metadata": {
            "labels": {**pod_labels, **routes_to},
            # A config change rolls the gateway pods.
            "annotations": {
                **scrape_annotations(GATEWAY_PORT),
                SPEC_HASH_ANNOTATION: stable_hash(gateway_config(inp)),
                **auth_hash(inp),
                **({REDIS_URL_ANNOTATION: inp.redis_url_hash} if inp.redis_url_hash else {}),
            },
        },
        "spec": {
            "serviceAccountName": name,
            "terminationGracePeriodSeconds": 60,
            "containers": [
                {
                    "name": "gateway",
                    "image": inp.options.llmfleet_image or gw.image,
                    "args": [
                        "gateway",
                        "--config",
                        f"{CONFIG_DIR}/config/{CONFIG_KEY}",
                        "--port",
                        str(GATEWAY_PORT),
                    ],
                    "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
                    "env": env,
                    "resources": {"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
                    "readinessProbe": {
                        "httpGet": {"path": "/health", "port": "http"},
                        "periodSeconds": 5,
                        "timeoutSeconds": 3,
                    },
                    "livenessProbe": {
                        "httpGet": {"path": "/health", "port": "http"},
                        "periodSeconds": 10,
                        "timeoutSeconds": 3,
                        "failureThreshold": 3,
                    },
                    "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
                    "volumeMounts": mounts,
                    "securityContext": restricted_container(),
                }
            ],
            "securityContext": restricted_pod(GATEWAY_UID),
            "volumes": volumes,
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(inp, name, COMPONENT),
        "spec": {
            # With an HPA the replica count is the HPA's: not in what is applied, so it stays unowned here.
            **({} if gw.autoscaling is not None else {"replicas": gw.replicas}),
            "selector": {"matchLabels": pod_labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            # A new gateway that crashes right after its first probe never replaces a working one, and a
            # rollout does not outrun the clients' view of the endpoints.
            "minReadySeconds": GATEWAY_MIN_READY_SECONDS,
            "template": template,
        },
    }


def gateway_service(inp: RenderInput) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(inp, names.gateway(inp.name), COMPONENT),
        "spec": {
            "selector": selector_labels(inp.name, COMPONENT),
            "ports": [{"name": "http", "port": GATEWAY_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def gateway_pdb(inp: RenderInput) -> Manifest:
    return disruption_budget(inp, names.gateway(inp.name), COMPONENT)


def gateway_hpa(inp: RenderInput) -> Manifest | None:
    """The gateway's HorizontalPodAutoscaler on CPU (spec.gateway.autoscaling): up at once, down after five
    minutes of less load (the default stabilisation), by at most half the replicas a minute, as streams drain."""
    a = inp.obj.spec.gateway.autoscaling
    if a is None:
        return None
    name = names.gateway(inp.name)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(inp, name, COMPONENT),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": a.min_replicas,
            "maxReplicas": a.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": a.target_cpu_utilization},
                    },
                }
            ],
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0},
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}],
                },
            },
        },
    }
