"""An in-memory KubePort for unit tests: stores objects, applies by replacing our fields, counts reads and writes."""

from __future__ import annotations

import copy
import itertools
from typing import Any

from llmfleet.kube.port import KubeError, Obj, Ref


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str, str], Obj] = {}
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

    def add(self, obj: Obj) -> Obj:
        """Put an object in place as if someone else created it."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{next(self._uids)}")
        meta["resourceVersion"] = str(next(self._rv))
        meta.setdefault("generation", 1)
        self.objects[self._key(obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])] = obj
        return obj

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        self.reads += 1
        obj = self.objects.get(self._key(api_version, kind, namespace, name))
        return copy.deepcopy(obj) if obj else None

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[Obj]:
        self.reads += 1
        return [
            copy.deepcopy(o) for (av, k, ns, _), o in sorted(self.objects.items())
            if av == api_version and k == kind and ns == namespace
            and _matches(o["metadata"].get("labels", {}), label_selector)
        ]

    def apply(self, manifest: Obj) -> None:
        self._maybe_fail()
        self.writes += 1
        meta = manifest["metadata"]
        key = self._key(manifest["apiVersion"], manifest["kind"], meta.get("namespace", ""), meta["name"])
        live = self.objects.get(key)
        obj: dict[str, Any] = copy.deepcopy(manifest)
        if live is not None:
            obj["metadata"]["uid"] = live["metadata"]["uid"]
            if "status" in live:
                obj["status"] = live["status"]
            obj["metadata"]["resourceVersion"] = str(next(self._rv))
            self.objects[key] = obj
            return
        self.add(obj)

    def delete(self, ref: Ref, uid: str | None = None) -> None:
        self._maybe_fail()
        self.writes += 1
        key = self._key(ref.api_version, ref.kind, ref.namespace, ref.name)
        live = self.objects.get(key)
        if live is not None and (uid is None or live["metadata"]["uid"] == uid):
            del self.objects[key]

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, status: Obj) -> None:
        self._maybe_fail()
        self.writes += 1
        self.objects[self._key(api_version, kind, namespace, name)]["status"] = copy.deepcopy(status)

    def event(self, involved: Obj, type_: str, reason: str, message: str) -> None:
        self.writes += 1
        self.events.append((type_, reason, message))
