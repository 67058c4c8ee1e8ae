"""KubePort over the official `kubernetes` client (dynamic client, server-side apply), with write counting.

Responses are parsed with orjson straight into dicts (``serialize=False``): the operator only ever wants
plain dicts, so the dynamic client's ResourceInstance wrapping and ``to_dict()`` were CPU for nothing.
Apply, status and event responses are read to the end (so the connection goes back to the pool) but not
parsed.
"""

from __future__ import annotations

import builtins
import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError
from urllib3.exceptions import HTTPError

from llmfleet.kube.port import FIELD_MANAGER, KubeError, NotFound, Obj, Ref

USER_AGENT = "llmfleet-operator"


def load_config(kubeconfig: str | None = None) -> client.ApiClient:
    """In-cluster config when running in a pod, else the kubeconfig (KUBECONFIG or the given path)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=kubeconfig)
    cfg = client.Configuration.get_default_copy()
    cfg.connection_pool_maxsize = 32
    api = client.ApiClient(cfg)
    api.user_agent = USER_AGENT
    return api


def _error(exc: Exception) -> KubeError:
    if isinstance(exc, NotFoundError):
        return NotFound(404, "not found")
    status = getattr(exc, "status", 0) or 0
    body = getattr(exc, "body", None) or getattr(exc, "summary", lambda: str(exc))()
    message = str(body)
    if status == 404:
        return NotFound(404, message)
    return KubeError(int(status), message[:500])


def _drain(resp: Any) -> None:
    """Read an unparsed response to its end: only then does urllib3 return the connection to the pool (an
    unread one would cost a new TLS connection, client and API server side, for the next request)."""
    _ = resp.data


class KubeClient:
    """The real KubePort. ``writes`` counts mutating calls (for idempotence checks and benchmarks)."""

    def __init__(self, api: client.ApiClient | None = None) -> None:
        self.api = api or load_config()
        self.dyn = DynamicClient(self.api)
        self._resources: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self.writes = 0

    def _resource(self, api_version: str, kind: str) -> Any:
        key = (api_version, kind)
        res = self._resources.get(key)
        if res is None:
            with self._lock:
                res = self.dyn.resources.get(api_version=api_version, kind=kind)
                self._resources[key] = res
        return res

    def warm(self, kinds: list[tuple[str, str]]) -> None:
        """Resolve API discovery for these kinds now, not on the first reconcile."""
        for api_version, kind in kinds:
            try:
                self._resource(api_version, kind)
            except Exception:  # a kind the server lacks shows up again, with its error, where it is used
                continue

    def _count(self) -> None:
        with self._lock:
            self.writes += 1

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        try:
            resp = self._resource(api_version, kind).get(
                name=name, namespace=namespace or None, serialize=False
            )
            return orjson.loads(resp.data)  # type: ignore[no-any-return]
        except NotFoundError:
            return None
        except (DynamicApiError, ApiException, HTTPError) as exc:
            err = _error(exc)
            if isinstance(err, NotFound):
                return None
            raise err from None

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[Obj]:
        try:
            resp = self._resource(api_version, kind).get(
                namespace=namespace or None, label_selector=label_selector, serialize=False
            )
            return orjson.loads(resp.data).get("items") or []
        except (DynamicApiError, ApiException, HTTPError) as exc:
            raise _error(exc) from None

    def apply(self, manifest: Obj, field_manager: str = FIELD_MANAGER) -> None:
        meta = manifest["metadata"]
        self._count()
        try:
            _drain(
                self._resource(manifest["apiVersion"], manifest["kind"]).server_side_apply(
                    body=manifest,
                    name=meta["name"],
                    namespace=meta.get("namespace"),
                    field_manager=field_manager,
                    force_conflicts=True,
                    serialize=False,
                )
            )
        except (DynamicApiError, ApiException, HTTPError) as exc:
            raise _error(exc) from None

    def delete(self, ref: Ref, uid: str | None = None) -> None:
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        self._count()
        try:
            self._resource(ref.api_version, ref.kind).delete(
                name=ref.name, namespace=ref.namespace or None, body=body
            )
        except (DynamicApiError, ApiException, HTTPError) as exc:
            err = _error(exc)
            if not isinstance(err, NotFound):
                raise err from None

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, status: Obj) -> None:
        self._count()
        try:
            _drain(
                self._resource(api_version, kind).status.patch(
                    body={"status": status},
                    name=name,
                    namespace=namespace,
                    content_type="application/merge-patch+json",
                    serialize=False,
                )
            )
        except (DynamicApiError, ApiException, HTTPError) as exc:
            raise _error(exc) from None

    def event(self, involved: Obj, type_: str, reason: str, message: str) -> None:
        meta = involved["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "llmfleet-operator"},
            "reportingComponent": "llmfleet.io/operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._count()
        with contextlib.suppress(
            DynamicApiError, ApiException, HTTPError
        ):  # best effort: never fail a reconcile
            _drain(
                self._resource("v1", "Event").create(body=body, namespace=meta["namespace"], serialize=False)
            )

    def watch_snapshots(
        self, kind: str, namespace: str, label_selector: str, timeout_s: int = 300
    ) -> Iterator[builtins.list[Obj]]:
        """The selected EndpointSlices or Pods of a namespace as they change: the list first, then the whole
        set again after every change a watch reports (one long request instead of a list per poll). A watch
        the server ends (``timeout_s``) resumes from the last resourceVersion; an expired one (410) lists
        again; any other failure raises ``KubeError`` (the caller backs off and calls again)."""
        func: Callable[..., Any] = {
            "EndpointSlice": client.DiscoveryV1Api(self.api).list_namespaced_endpoint_slice,
            "Pod": client.CoreV1Api(self.api).list_namespaced_pod,
        }[kind]
        try:
            while True:
                body = orjson.loads(
                    func(namespace, label_selector=label_selector, _preload_content=False).data
                )
                objs = {o["metadata"]["name"]: o for o in body.get("items") or []}
                version = body["metadata"]["resourceVersion"]
                yield list(objs.values())
                while True:  # watches from the last version seen, until it expires
                    w = watch.Watch()
                    for ev in w.stream(
                        func,
                        namespace,
                        label_selector=label_selector,
                        resource_version=version,
                        timeout_seconds=timeout_s,
                        allow_watch_bookmarks=True,
                        deserialize=False,
                        _request_timeout=(10, timeout_s + 30),
                    ):
                        obj = ev["object"]
                        version = obj["metadata"].get("resourceVersion") or version
                        if ev["type"] == "BOOKMARK":
                            continue
                        if ev["type"] == "DELETED":
                            objs.pop(obj["metadata"]["name"], None)
                        else:
                            objs[obj["metadata"]["name"]] = obj
                        yield list(objs.values())
        except ApiException as exc:
            if exc.status != 410:
                raise _error(exc) from None
        except HTTPError as exc:
            raise _error(exc) from None
        # 410 Gone: the version is too old to watch from; the caller's next call lists afresh.

    def service_account_kubeconfig(
        self, namespace: str, service_account: str, path: str, pod: tuple[str, str] | None = None
    ) -> None:
        """Write a kubeconfig that authenticates as a ServiceAccount (a TokenRequest, 1 h), for local pods.
        ``pod`` (name, uid) binds the token to that pod, as a kubelet's projected token is: the API server's
        audit log then names the pod that made each request."""
        bound = (
            client.V1BoundObjectReference(api_version="v1", kind="Pod", name=pod[0], uid=pod[1])
            if pod
            else None
        )
        body = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600, bound_object_ref=bound)
        )
        self._count()
        try:
            status = (
                client.CoreV1Api(self.api)
                .create_namespaced_service_account_token(service_account, namespace, body)
                .status
            )
        except (ApiException, HTTPError) as exc:
            raise _error(exc) from None
        if status is None or not status.token:
            raise KubeError(0, f"the TokenRequest for {namespace}/{service_account} returned no token")
        token = status.token
        cfg = self.api.configuration
        import yaml

        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "pod",
            "clusters": [
                {"name": "local", "cluster": {"server": cfg.host, "certificate-authority": cfg.ssl_ca_cert}}
            ],
            "users": [{"name": "sa", "user": {"token": token}}],
            "contexts": [
                {"name": "pod", "context": {"cluster": "local", "user": "sa", "namespace": namespace}}
            ],
        }
        with open(path, "w") as f:
            yaml.safe_dump(doc, f)
