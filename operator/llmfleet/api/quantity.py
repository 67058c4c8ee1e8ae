"""Durations and Kubernetes-style quantities: the string forms users write in a spec, parsed to numbers."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``500ms``, ``30s``, ``5m``, ``1h30m``."""
    if not isinstance(text, str) or not _DURATION_RE.match(text.strip()):
        raise ValueError(f"{text!r} is not a duration: use a number with a unit, e.g. 500ms, 30s, 5m, 1h")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text.strip()))


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


Duration = Annotated[
    str,
    AfterValidator(_check_duration),
    Field(json_schema_extra={"pattern": DURATION_PATTERN}),
]

_QUANTITY_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P|m)?$")
_QUANTITY_FACTOR = {
    None: 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
}
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P|m)?$"


def parse_quantity(text: str) -> float:
    """The value of a Kubernetes quantity such as ``16Gi``, ``500m`` or ``4``."""
    m = _QUANTITY_RE.match(str(text).strip())
    if not m:
        raise ValueError(f"{text!r} is not a Kubernetes quantity: e.g. 4, 500m, 16Gi")
    return float(m.group(1)) * _QUANTITY_FACTOR[m.group(2)]


def _check_quantity(text: str) -> str:
    parse_quantity(text)
    return text


Quantity = Annotated[
    str,
    AfterValidator(_check_quantity),
    Field(json_schema_extra={"pattern": QUANTITY_PATTERN}),
]
