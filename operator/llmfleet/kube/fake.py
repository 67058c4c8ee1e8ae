"""An in-memory KubePort for unit tests, held to the real API server by one contract suite
(``tests/kube_contract.py``, run against both): server-side apply with field ownership per field manager,
status as a JSON merge patch (RFC 7386) on its own, generation and resourceVersion as the server moves them,
equality- and set-based label selectors, a uid precondition on delete. It counts reads and writes.

Simplifications, outside what the contract suite checks: a list is one field owned as a whole (the server
merges lists with merge keys, such as containers by name, item by item); no schema defaulting, admission or
finalizers; a delete removes the object at once.
"""

from __future__ import annotations

import copy
import itertools
import re
from datetime import UTC, datetime
from typing import Any

from llmfleet.kube.port import FIELD_MANAGER, KubeError, NotFound, Obj, Ref

Path = tuple[str, ...]
SEED_MANAGER = "before-llmfleet"  # who owns the fields of an object put in place with ``add``
_IDENTITY: frozenset[Path] = frozenset(
    {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace")}
)
_TERM = re.compile(
    r"^\s*(!?)\s*([A-Za-z0-9._/-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9._-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$"
)


def _split_terms(selector: str) -> list[str]:
    """Terms of a selector: commas inside ``in (a, b)`` do not split."""
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(selector):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(selector[start:i])
            start = i + 1
    terms.append(selector[start:])
    return [t for t in terms if t.strip()]


def matches(labels: dict[str, str], selector: str) -> bool:
    """A Kubernetes label selector: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a)``, ``k``, ``!k``."""
    for term in _split_terms(selector):
        m = _TERM.match(term)
        if m is None:
            raise KubeError(400, f"unable to parse requirement: {term!r}")
        negate, key, op, value, set_op, values = m.groups()
        if negate and (op or set_op):
            raise KubeError(400, f"unable to parse requirement: {term!r}")
        if op in ("=", "=="):
            ok = labels.get(key) == value
        elif op == "!=":
            ok = labels.get(key) != value
        elif set_op:
            wanted = {v.strip() for v in values.split(",") if v.strip()}
            ok = labels.get(key) in wanted if set_op == "in" else labels.get(key) not in wanted
        else:
            ok = (key in labels) != bool(negate)
        if not ok:
            return False
    return True


def _leaves(obj: Any, prefix: Path = ()) -> dict[Path, Any]:
    """Every field an object sets, as paths to its non-map values (a list is one field)."""
    if isinstance(obj, dict) and (obj or not prefix):
        out: dict[Path, Any] = {}
        for k, v in obj.items():
            out.update(_leaves(v, (*prefix, k)))
        return out
    return {prefix: obj}


def _set(obj: dict[str, Any], path: Path, value: Any) -> None:
    for k in path[:-1]:
        nxt = obj.get(k)
        if not isinstance(nxt, dict):
            nxt = obj[k] = {}
        obj = nxt
    if value == {} and isinstance(obj.get(path[-1]), dict):
        return  # an empty map sets the map, not its keys: others' keys stay
    obj[path[-1]] = copy.deepcopy(value)


def _unset(obj: dict[str, Any], path: Path) -> None:
    """Remove a field, and the maps it leaves empty."""
    trail = []
    for k in path[:-1]:
        nxt = obj.get(k)
        if not isinstance(nxt, dict):
            return
        trail.append((obj, k))
        obj = nxt
    if obj.get(path[-1]) not in ({}, None) and isinstance(obj.get(path[-1]), dict):
        return  # a map we set empty that others have filled since
    obj.pop(path[-1], None)
    for parent, k in reversed(trail):
        if parent[k]:
            break
        del parent[k]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge key by key, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _spec_part(obj: Obj) -> Obj:
    """What moves metadata.generation: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str, str], Obj] = {}
        self.managed: dict[tuple[str, str, str, str], dict[str, set[Path]]] = {}
        self.events: list[tuple[str, str, str]] = []
        self.writes = 0
        self.reads = 0
        self.fail_next: KubeError | None = None
        self._uids = itertools.count(1)
        self._rv = itertools.count(1)

    def _key(self, api_version: str, kind: str, namespace: str, name: str) -> tuple[str, str, str, str]:
        return (api_version, kind, namespace, name)

    def _maybe_fail(self) -> None:
        if self.fail_next is not None:
            err, self.fail_next = self.fail_next, None
            raise err

    def _new_meta(self, meta: dict[str, Any]) -> None:
        meta.setdefault("uid", f"uid-{next(self._uids)}")
        meta["resourceVersion"] = str(next(self._rv))
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))

    def add(self, obj: Obj) -> Obj:
        """Put an object in place as if someone else created it (its fields are theirs, not llmfleet's)."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        self._new_meta(meta)
        key = self._key(obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])
        self.objects[key] = obj
        fields = {p for p in _leaves({k: v for k, v in obj.items() if k != "status"}) if p not in _IDENTITY}
        self.managed[key] = {SEED_MANAGER: fields}
        return obj

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        self.reads += 1
        obj = self.objects.get(self._key(api_version, kind, namespace, name))
        return copy.deepcopy(obj) if obj else None

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[Obj]:
        self.reads += 1
        return [
            copy.deepcopy(o)
            for (av, k, ns, _), o in sorted(self.objects.items())
            if av == api_version
            and k == kind
            and (ns == namespace or not namespace)
            and matches(o["metadata"].get("labels") or {}, label_selector)
        ]

    def apply(self, manifest: Obj, field_manager: str = FIELD_MANAGER) -> None:
        """Server-side apply, forcing conflicts: the manager's fields take these values, the fields it set
        last time and sets no more go (unless another manager also owns them), everyone else's stay."""
        self._maybe_fail()
        self.writes += 1
        meta = manifest["metadata"]
        key = self._key(manifest["apiVersion"], manifest["kind"], meta.get("namespace", ""), meta["name"])
        live = self.objects.get(key)
        fields = {
            p: v
            for p, v in _leaves({k: v for k, v in manifest.items() if k != "status"}).items()
            if p not in _IDENTITY
        }
        owners = self.managed.setdefault(key, {})
        if live is None:
            obj: Obj = {
                "apiVersion": manifest["apiVersion"],
                "kind": manifest["kind"],
                "metadata": {
                    "name": meta["name"],
                    **({"namespace": meta["namespace"]} if meta.get("namespace") else {}),
                },
            }
        else:
            obj = copy.deepcopy(live)
        others = set().union(*(f for m, f in owners.items() if m != field_manager))
        for path in owners.get(field_manager, set()) - fields.keys() - others:
            _unset(obj, path)
        for path, value in fields.items():
            _set(obj, path, value)
        for m, f in owners.items():
            if m != field_manager:
                f.difference_update(fields)  # forced: the fields are this manager's now
        owners[field_manager] = set(fields)
        if live is None:
            self._new_meta(obj["metadata"])
            self.objects[key] = obj
        elif obj != live:
            obj["metadata"]["resourceVersion"] = str(next(self._rv))
            if _spec_part(obj) != _spec_part(live):
                obj["metadata"]["generation"] = int(live["metadata"].get("generation", 1)) + 1
            self.objects[key] = obj

    def delete(self, ref: Ref, uid: str | None = None) -> None:
        self._maybe_fail()
        self.writes += 1
        key = self._key(ref.api_version, ref.kind, ref.namespace, ref.name)
        live = self.objects.get(key)
        if live is None:
            return
        if uid is not None and live["metadata"]["uid"] != uid:
            raise KubeError(
                409,
                f"Precondition failed: UID in precondition: {uid}, UID in object meta: "
                f"{live['metadata']['uid']}",
            )
        del self.objects[key]
        self.managed.pop(key, None)

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, status: Obj) -> None:
        """A JSON merge patch of the status subresource (what the real client sends)."""
        self._maybe_fail()
        self.writes += 1
        key = self._key(api_version, kind, namespace, name)
        live = self.objects.get(key)
        if live is None:
            raise NotFound(404, f'{kind.lower()}s "{name}" not found')
        patched = merge_patch(live.get("status"), status)
        if patched != live.get("status"):
            live["status"] = patched
            live["metadata"]["resourceVersion"] = str(next(self._rv))

    def event(self, involved: Obj, type_: str, reason: str, message: str) -> None:
        self.writes += 1
        self.events.append((type_, reason, message))
