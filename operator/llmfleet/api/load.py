"""Parsing LLMDeployment documents (YAML text or API objects) into models, with errors that name the field."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from llmfleet.api.v1alpha1 import LLMDeployment, LLMDeploymentSpec


@dataclass(frozen=True)
class FieldError:
    path: str  # e.g. spec.pools.spot.maxReplicas
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(ValueError):
    """One or more problems in a document; ``errors`` name each field."""

    def __init__(self, errors: Iterable[FieldError], source: str = "") -> None:
        self.errors = tuple(errors)
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__(prefix + "; ".join(str(e) for e in self.errors))


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-after", "function-before")):
            continue
        else:
            out += ("." if out else "") + part
    return out


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str] | None:
    """Wire names of the fields allowed at ``loc`` inside ``model`` (for 'unknown field' errors)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        fields = current.model_fields
        match = next((f for n, f in fields.items() if (f.alias or n) == part or n == part), None)
        if match is None:
            return None
        ann = match.annotation
        current = None
        for candidate in (ann, *getattr(ann, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                current = candidate
                break
            for inner in getattr(candidate, "__args__", ()):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    current = inner
    if current is None:
        return None
    return [f.alias or n for n, f in current.model_fields.items()]


def errors_from_validation(
    exc: ValidationError, root: type[BaseModel], prefix: tuple[str, ...] = ()
) -> list[FieldError]:
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            allowed = _fields_at(root, loc[:-1])
            msg = "unknown field" + (f"; allowed here: {', '.join(allowed)}" if allowed else "")
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        out.append(FieldError(_format_loc(prefix + loc), msg))
    return out


def parse_object(obj: Mapping[str, Any], source: str = "") -> LLMDeployment:
    """Validate one LLMDeployment object (a dict), raising SpecError with field paths."""
    if not isinstance(obj, Mapping):
        raise SpecError([FieldError("", "expected a YAML mapping (an LLMDeployment object)")], source)
    try:
        return LLMDeployment.model_validate(obj)
    except ValidationError as exc:
        raise SpecError(errors_from_validation(exc, LLMDeployment), source) from None


def parse_spec(spec: Mapping[str, Any]) -> LLMDeploymentSpec:
    """Validate a bare spec (as the operator receives it), with paths starting at ``spec``."""
    try:
        return LLMDeploymentSpec.model_validate(spec)
    except ValidationError as exc:
        raise SpecError(errors_from_validation(exc, LLMDeploymentSpec, ("spec",))) from None


def load_documents(text: str, source: str = "<stdin>") -> list[LLMDeployment]:
    """Every LLMDeployment in a (multi-document) YAML text; other kinds are skipped."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([FieldError("", f"invalid YAML{where}: {problem}")], source) from None
    found = []
    for i, doc in enumerate(docs):
        if isinstance(doc, Mapping) and doc.get("kind") not in (None, "LLMDeployment"):
            continue
        found.append(parse_object(doc, f"{source} (document {i + 1})" if len(docs) > 1 else source))
    if not found:
        raise SpecError([FieldError("kind", "no LLMDeployment found in the input")], source)
    return found
