"""The output-length policy: a default ``max_tokens`` for requests that name none and a cap for those that ask
for more, per deployment with per-key overrides (``spec.gateway.outputTokens``). Pure: the gateway applies the
decision to the body it forwards, reserves the per-key token budget with it and tells the client in headers.

Requests above the cap are clamped, not refused (429-free, as the source material's "reduce output length"
lever wants): an OpenAI client that asked for 8,000 tokens gets at most the cap, with
``x-llmfleet-max-tokens-clamped: 8000`` saying so. The field the client used is the one rewritten
(``max_completion_tokens`` wins over ``max_tokens`` when both are set, as OpenAI reads them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class OutputPolicy:
    default: int | None = None  # max_tokens for a request that names none (None: the engine's own default)
    max: int | None = None  # the most a request may ask for (None: no cap)

    @property
    def active(self) -> bool:
        return self.default is not None or self.max is not None


@dataclass(frozen=True, slots=True)
class OutputDecision:
    field: str  # the body field to set
    value: int  # its new value
    clamped_from: int | None  # what the client asked for, when above the cap


def decide(asked: int | None, asked_field: str | None, policy: OutputPolicy) -> OutputDecision | None:
    """What to forward for a request that asked for ``asked`` output tokens (None: named none) in
    ``asked_field``; None when the body goes out as sent."""
    if asked is None:
        if policy.default is None:
            return None
        value = policy.default if policy.max is None else min(policy.default, policy.max)
        return OutputDecision("max_tokens", value, None)
    if policy.max is not None and asked > policy.max:
        return OutputDecision(asked_field or "max_tokens", policy.max, asked)
    return None


def for_key(base: OutputPolicy, per_key: dict[str, OutputPolicy], key: str | None) -> OutputPolicy:
    """The key's policy: its own fields where set, the deployment's otherwise."""
    own = per_key.get(key) if key is not None else None
    if own is None:
        return base
    return OutputPolicy(
        default=own.default if own.default is not None else base.default,
        max=own.max if own.max is not None else base.max,
    )


def asked_field(body: dict[str, Any]) -> str:
    """The field a request's output length is read from, in vLLM's order: max_completion_tokens, else max_tokens."""
    return "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"


def changes(body: dict[str, Any], decision: OutputDecision) -> dict[str, int]:
    """The body fields a decision sets: its own field, and either length field that asks for more."""
    return {
        f: decision.value
        for f in (decision.field, "max_tokens", "max_completion_tokens")
        if f == decision.field or (type(body.get(f)) is int and body[f] > decision.value)
    }
