"""Gather: read the children an LLMDeployment owns (and its engine pods) into a frozen snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from llmfleet.fleet.names import child_selector, engine_pod_selector
from llmfleet.kube.port import KubePort, Obj

# Every kind a CR can own, in (apiVersion, kind) form: what prune looks at.
CHILD_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("apps/v1", "Deployment"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
)


@dataclass(frozen=True)
class Snapshot:
    children: dict[tuple[str, str], Obj]  # (kind, name) -> live object
    engine_pods: tuple[Obj, ...]
    notices: Mapping[str, str] = field(
        default_factory=dict
    )  # node name -> reclaim signal, for the pods' nodes
    # The managed Redis's credentials Secret as read (a GET by name, not a watch: the operator lists and watches
    # no Secret), or None when absent or not looked for.
    cache_auth: Obj | None = None
    redis_url_hash: str | None = None  # of the external Redis URL in the user's Secret, as last read


def observe(port: KubePort, namespace: str, name: str) -> Snapshot:
    children: dict[tuple[str, str], Obj] = {}
    selector = child_selector(name)
    for api_version, kind in CHILD_KINDS:
        for obj in port.list(api_version, kind, namespace, selector):
            obj.setdefault("apiVersion", api_version)
            obj.setdefault("kind", kind)
            children[(kind, obj["metadata"]["name"])] = obj
    pods = port.list("v1", "Pod", namespace, engine_pod_selector(name))
    return Snapshot(children=children, engine_pods=tuple(pods))


def resource_version(obj: Obj) -> int:
    rv = obj["metadata"].get("resourceVersion") or "0"
    return int(rv) if rv.isdigit() else 0


class ChildStore:
    """Children of each CR as last seen on the watch streams (an informer cache), so a reconcile reads nothing.

    The first reconcile of a CR that existed before the operator started lists from the API (the watches
    may not have delivered everything yet) and seeds the store; a CR created after the watches were up
    needs no listing: every child it has was made by us and reaches the store through the watches (a
    snapshot missing a child can only under-prune or under-report for one reconcile, never delete).
    After that, watch events keep the store current. Of two versions of an object the one with the higher
    resourceVersion wins, so a late seed never overwrites a newer event.

    The CRs themselves are kept the same way (``cr_event``), so a reconcile triggered by a child event does
    not read its CR back from the API either.
    """

    def __init__(self) -> None:
        self._children: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {}
        self._pods: dict[tuple[str, str], dict[str, Obj]] = {}
        self._warm: set[tuple[str, str]] = set()
        self._crs: dict[tuple[str, str], Obj] = {}
        self._notices: dict[str, str] = {}  # node name -> the signal that says it is going
        # Each CR's managed-cache credentials Secret (None: absent), as last read or applied. No Secret is
        # watched, so this is refreshed by a GET on the periodic tick (a user's rotation or deletion is seen then).
        self._auth: dict[tuple[str, str], Obj | None] = {}
        self._url: dict[tuple[str, str], tuple[tuple[str, str], str | None]] = {}  # secretRef -> URL hash

    def _put(self, bucket: dict, key: object, obj: Obj) -> None:  # type: ignore[type-arg]
        old = bucket.get(key)
        if old is None or resource_version(obj) >= resource_version(old):
            bucket[key] = obj

    def event(self, namespace: str, owner: str, obj: Obj, deleted: bool) -> None:
        kind, name = obj.get("kind", ""), obj["metadata"]["name"]
        if kind == "Pod":
            pods = self._pods.setdefault((namespace, owner), {})
            if deleted:
                pods.pop(name, None)
            else:
                self._put(pods, name, obj)
            return
        children = self._children.setdefault((namespace, owner), {})
        if deleted:
            children.pop((kind, name), None)
        else:
            self._put(children, (kind, name), obj)

    def cr_event(self, obj: Obj, deleted: bool) -> None:
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if deleted:
            self._crs.pop(key, None)
        else:
            self._put(self._crs, key, obj)

    def node_event(self, node: str, signal: str | None) -> set[tuple[str, str]]:
        """Record a node's reclaim notice (None: none, or no longer); returns the CRs with engine pods on a
        node that has one (none otherwise: most node events are heartbeats, not worth a scan of every pod)."""
        if signal is None:
            self._notices.pop(node, None)
            return set()
        self._notices[node] = signal
        return {
            key
            for key, pods in self._pods.items()
            if any((p.get("spec") or {}).get("nodeName") == node for p in pods.values())
        }

    def mark_deleting(self, namespace: str, owner: str, pod: str, when: str) -> None:
        """Our own delete of an engine pod, before its watch event arrives: no second drain for it."""
        current = self._pods.get((namespace, owner), {}).get(pod)
        if current is not None and not current["metadata"].get("deletionTimestamp"):
            copy = {**current, "metadata": {**current["metadata"], "deletionTimestamp": when}}
            self._pods[(namespace, owner)][pod] = copy

    def cr(self, namespace: str, name: str) -> Obj | None:
        return self._crs.get((namespace, name))

    def mark_new(self, namespace: str, name: str) -> None:
        """This CR was created after the watches started: nothing to list (and no credentials Secret yet)."""
        self._warm.add((namespace, name))
        self._auth.setdefault((namespace, name), None)

    def knows_auth(self, namespace: str, name: str) -> bool:
        return (namespace, name) in self._auth

    def auth(self, namespace: str, name: str) -> Obj | None:
        return self._auth.get((namespace, name))

    def put_auth(self, namespace: str, name: str, secret: Obj | None) -> None:
        self._auth[(namespace, name)] = secret

    def url_hash(self, namespace: str, name: str, ref: tuple[str, str]) -> tuple[bool, str | None]:
        """(known, hash) of the external Redis URL Secret key ``ref`` for this CR, as last read."""
        got = self._url.get((namespace, name))
        return (True, got[1]) if got is not None and got[0] == ref else (False, None)

    def put_url_hash(self, namespace: str, name: str, ref: tuple[str, str], digest: str | None) -> None:
        self._url[(namespace, name)] = (ref, digest)

    def snapshot(self, port: KubePort, namespace: str, name: str) -> Snapshot:
        key = (namespace, name)
        if key not in self._warm:
            fresh = observe(port, namespace, name)
            children = self._children.setdefault(key, {})
            for k in [k for k in children if k not in fresh.children]:
                del children[k]
            for k, obj in fresh.children.items():
                self._put(children, k, obj)
            by_name = self._pods.setdefault(key, {})
            by_name.clear()
            for pod in fresh.engine_pods:
                by_name[pod["metadata"]["name"]] = pod
            self._warm.add(key)
        pods = tuple(self._pods.get(key, {}).values())
        nodes = {(p.get("spec") or {}).get("nodeName") for p in pods}
        return Snapshot(
            children=dict(self._children.get(key, {})),
            engine_pods=pods,
            notices={n: s for n, s in self._notices.items() if n in nodes},
        )

    def forget(self, namespace: str, name: str) -> None:
        self._warm.discard((namespace, name))
        self._auth.pop((namespace, name), None)
        self._url.pop((namespace, name), None)
        self._crs.pop((namespace, name), None)
        self._children.pop((namespace, name), None)
        self._pods.pop((namespace, name), None)
