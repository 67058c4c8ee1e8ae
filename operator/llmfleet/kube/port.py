"""The narrow interface the rest of llmfleet uses to talk to Kubernetes, and the errors it raises.

Nothing outside ``llmfleet.kube`` sees the official client: reconcile code takes a ``KubePort`` and
catches these exceptions, so tests can hand it ``FakeKube`` (a real in-memory implementation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

Obj = dict[str, Any]
FIELD_MANAGER = "llmfleet"


class KubeError(Exception):
    """An API call failed; ``status`` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message

    @property
    def transient(self) -> bool:
        """Worth retrying later: conflicts, throttling, server errors, connection problems."""
        return self.status in (0, 409, 429) or self.status >= 500


class NotFound(KubeError):
    pass


@dataclass(frozen=True)
class Ref:
    api_version: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, obj: Obj) -> Ref:
        meta = obj["metadata"]
        return cls(obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


class KubePort(Protocol):
    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None: ...

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[Obj]: ...

    def apply(self, manifest: Obj, field_manager: str = FIELD_MANAGER) -> None:
        """Server-side apply under a field manager (``llmfleet``), forcing ownership of the fields it sets."""
        ...

    def delete(self, ref: Ref, uid: str | None = None) -> None:
        """Delete (background propagation); with ``uid``, only that exact object."""
        ...

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, status: Obj) -> None: ...

    def event(self, involved: Obj, type_: str, reason: str, message: str) -> None: ...
