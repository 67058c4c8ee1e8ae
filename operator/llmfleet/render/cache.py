"""Cache children: the managed Redis 8 Deployment and Service (nothing when external or all caches are off)."""

from __future__ import annotations

from llmfleet.api.quantity import parse_quantity
from llmfleet.fleet import names
from llmfleet.fleet.names import REDIS_PORT, selector_labels
from llmfleet.render.common import Manifest, RenderInput, metadata

COMPONENT = names.CACHE


def managed(inp: RenderInput) -> bool:
    cache = inp.obj.spec.cache
    return cache.any_enabled and cache.redis.mode == "managed"


def redis_url(inp: RenderInput) -> str | None:
    """The URL the gateway uses; None when the URL comes from a Secret (external) or caching is off."""
    cache = inp.obj.spec.cache
    if not cache.any_enabled:
        return None
    if cache.redis.mode == "external":
        return cache.redis.url
    return f"redis://{names.cache(inp.name)}:{REDIS_PORT}/0"


def cache_deployment(inp: RenderInput) -> Manifest | None:
    if not managed(inp):
        return None
    redis = inp.obj.spec.cache.redis
    maxmemory = int(parse_quantity(redis.memory) * 0.9)
    pod_labels = selector_labels(inp.name, COMPONENT)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(inp, names.cache(inp.name), COMPONENT),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": pod_labels},
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "containers": [
                        {
                            "name": "redis",
                            "image": redis.image,
                            "args": [
                                "redis-server",
                                "--port",
                                str(REDIS_PORT),
                                "--maxmemory",
                                str(maxmemory),
                                "--maxmemory-policy",
                                "allkeys-lru",
                                "--save",
                                "",
                                "--appendonly",
                                "no",
                                "--protected-mode",
                                "no",
                            ],
                            "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
                            "resources": {
                                "requests": {"cpu": "250m", "memory": redis.memory},
                                "limits": {"memory": redis.memory},
                            },
                            "readinessProbe": {
                                "tcpSocket": {"port": "redis"},
                                "periodSeconds": 5,
                                "timeoutSeconds": 3,
                            },
                            "livenessProbe": {
                                "tcpSocket": {"port": "redis"},
                                "periodSeconds": 10,
                                "timeoutSeconds": 3,
                                "failureThreshold": 6,
                            },
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "runAsNonRoot": True,
                                "runAsUser": 999,
                            },
                        }
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                },
            },
        },
    }


def cache_service(inp: RenderInput) -> Manifest | None:
    if not managed(inp):
        return None
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(inp, names.cache(inp.name), COMPONENT),
        "spec": {
            "selector": selector_labels(inp.name, COMPONENT),
            "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}],
        },
    }
