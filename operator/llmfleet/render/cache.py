"""Cache children: the managed Redis 8 Deployment, its Service and its credentials (nothing when external or all
caches are off).

The managed Redis is authenticated: its `default` user is off, and one ACL user, the gateway's, logs in with a
password kept in a Secret (`<name>-cache-auth`: `password` for the gateway's env, `users.acl` for Redis, which
holds only the password's SHA-256). The reconciler reads the live Secret and passes its password in, or a fresh
one it drew, so this stays pure. Both pod templates carry a hash of the password: a rotation (edit `password`, or
delete the Secret for a new one) rolls Redis and the gateways, whose graceful shutdown finishes their streams.
"""

from __future__ import annotations

import base64
import hashlib

from llmfleet.api.quantity import parse_quantity
from llmfleet.fleet import names
from llmfleet.fleet.names import REDIS_PORT, selector_labels
from llmfleet.render.common import (
    Manifest,
    RenderInput,
    metadata,
    restricted_container,
    restricted_pod,
    stable_hash,
)

COMPONENT = names.CACHE
REDIS_UID = 999  # the official image's redis user: its entrypoint then runs redis-server as is
AUTH_USER = "llmfleet-gateway"  # the one Redis user: the gateways log in as it
PASSWORD_KEY, ACL_KEY = "password", "users.acl"
ACL_DIR = "/etc/redis/acl"
# On the Redis and gateway pod templates: a rotation rolls both.
AUTH_ANNOTATION = "llmfleet.io/cache-auth-hash"
# What the gateways' user may run: every key, channel and data command (the cache, the limiter's scripts, the
# query engine's FT.*), none of the @dangerous ones (CONFIG, DEBUG, MODULE, FLUSHALL, KEYS, ACL, SHUTDOWN…).
ACL_RULES = "~* &* +@all -@dangerous"


def acl_file(password: str) -> str:
    """Redis's ACL file: the default user off, the gateways' user on with the password's SHA-256 only."""
    digest = hashlib.sha256(password.encode()).hexdigest()
    return f"user default off\nuser {AUTH_USER} on #{digest} {ACL_RULES}\n"


def auth_hash(inp: RenderInput) -> dict[str, str]:
    """The pod-template annotation that rolls Redis and the gateways when the password changes."""
    if inp.cache_password is None or not managed(inp):
        return {}
    return {AUTH_ANNOTATION: stable_hash(hashlib.sha256(inp.cache_password.encode()).hexdigest())}


def cache_auth_secret(inp: RenderInput) -> Manifest | None:
    if not managed(inp) or inp.cache_password is None:
        return None
    data = {PASSWORD_KEY: inp.cache_password, ACL_KEY: acl_file(inp.cache_password)}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(inp, names.cache_auth(inp.name), COMPONENT),
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


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
                "metadata": {"labels": pod_labels, "annotations": auth_hash(inp)},
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
                                "--aclfile",
                                f"{ACL_DIR}/{ACL_KEY}",
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
                            "volumeMounts": [
                                {"name": "data", "mountPath": "/data"},
                                {"name": "acl", "mountPath": ACL_DIR, "readOnly": True},
                            ],
                            "securityContext": restricted_container(),
                        }
                    ],
                    "securityContext": restricted_pod(REDIS_UID),
                    "volumes": [
                        {"name": "data", "emptyDir": {}},
                        {
                            "name": "acl",
                            "secret": {
                                "secretName": names.cache_auth(inp.name),
                                "items": [{"key": ACL_KEY, "path": ACL_KEY}],
                                "defaultMode": 0o440,
                            },
                        },
                    ],
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
