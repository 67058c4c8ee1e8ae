"""The gateway's model-route stage (spec.routing): which member of the route serves a request, and the body
it is forwarded with. The decision itself is llmfleet.modelroute's (pure); this module reads the request for
it, computes the query's features when the auto policy decides (hashed n-grams; or, for a bank built on the
sentence encoder, the vector the semantic cache computed, else an encoder call off the event loop), and keeps
one engine router per self-hosted member.

A client names the route's model (the deployment's served name) to let the policy choose, or a member's model
name to pin that member. Sensitive requests never go to the `external` member: they fall back to the
route's default self-hosted member (fail closed, as everywhere in the gateway).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmfleet import modelroute
from llmfleet.gateway.config import RouteConfig
from llmfleet.gateway.output import OutputPolicy
from llmfleet.gateway.routing import Router
from llmfleet.modelroute import Auto, Bank, Choice, Match, RoutePolicy, Rule

EXTERNAL = "external"


@dataclass(eq=False, slots=True)
class Member:
    name: str  # "self", a member deployment's name, or "external"
    model: str  # what its engines serve: the forwarded body's "model"
    router: Router | None  # None: the managed API (gateway.external)
    output: OutputPolicy | None = None  # the member's own output-length policy, after the deployment's
    model_header: bytes = b""  # x-llmfleet-model's value

    def __post_init__(self) -> None:
        self.model_header = self.model.encode()


def policy_of(cfg: RouteConfig) -> RoutePolicy:
    rules = tuple(
        Rule(
            Match(
                keys=frozenset(r.match.keys),
                headers=tuple(sorted((k.lower(), v) for k, v in r.match.headers.items())),
                paths=frozenset(r.match.paths),
                min_prompt_chars=r.match.min_prompt_chars,
                max_prompt_chars=r.match.max_prompt_chars,
                tasks=frozenset(r.match.tasks),
            ),
            r.to,
        )
        for r in cfg.rules
    )
    auto = None if cfg.auto is None else Auto(cfg.auto.small, cfg.auto.large, cfg.auto.threshold, cfg.auto.k)
    return RoutePolicy(tuple(m.name for m in cfg.members), cfg.default, rules, auto)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: the text ones
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def prompt_texts(body: dict[str, Any]) -> tuple[str, int]:
    """(the last user turn or the completion prompt, the characters of text in the whole prompt)."""
    msgs = body.get("messages")
    if isinstance(msgs, list):
        total, last = 0, ""
        for m in msgs:
            if isinstance(m, dict):
                t = _text(m.get("content"))
                total += len(t)
                if m.get("role") == "user":
                    last = t
        return last, total
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        prompt = prompt[0] if prompt and isinstance(prompt[0], str) else ""
    text = prompt if isinstance(prompt, str) else ""
    return text, len(text)


class ModelRoute:
    """The members and the policy of one route; `choose` is called once per request that reaches dispatch."""

    def __init__(
        self, cfg: RouteConfig, routers: dict[str, Router], external: bool, embedder: Any = None
    ) -> None:
        self.policy = policy_of(cfg)
        self.members: dict[str, Member] = {
            m.name: Member(
                m.name,
                m.model,
                routers[m.name],
                None
                if m.output_tokens is None
                else OutputPolicy(m.output_tokens.default, m.output_tokens.max),
            )
            for m in cfg.members
        }
        if external:
            self.members[EXTERNAL] = Member(EXTERNAL, EXTERNAL, None)
        self.by_model = {m.model: m for m in self.members.values() if m.router is not None}
        self.default = self.members[cfg.default] if cfg.default in self.members else self.members["self"]
        # Where a sensitive request goes when the policy said external: the default, if self-hosted.
        self.fallback = self.default if self.default.router is not None else self.members["self"]
        self.header_names = frozenset(name for r in self.policy.rules for name, _ in r.match.headers)
        self.embedder = embedder
        self.bank: Bank | None = None
        if cfg.auto is not None:
            self.bank = Bank.load(modelroute.BANK_PATH if cfg.auto.bank is None else Path(cfg.auto.bank))

    @property
    def needs_encoder(self) -> str | None:
        """The sentence encoder the auto policy's bank was built with (None: n-gram features, no encoder)."""
        return None if self.bank is None or self.bank.ngram_dim is not None else self.bank.encoder

    def check_encoder(self) -> None:
        """Refuse at start a bank whose features the gateway cannot compute."""
        want = self.needs_encoder
        if want is not None and getattr(self.embedder, "name", None) != want:
            raise ValueError(
                f"route.auto: the bank was built with {want}, the gateway's encoder is "
                f"{getattr(self.embedder, 'name', None)}"
            )

    def pinned(self, model: Any) -> Member | None:
        """The member a client named by its model name (None: not a member's)."""
        return self.by_model.get(model) if isinstance(model, str) else None

    async def choose(
        self,
        key: str | None,
        path: str,
        raw_headers: list[tuple[bytes, bytes]],
        body: dict[str, Any],
        vector: Any,
    ) -> tuple[Member, Choice]:
        """The member for a request that named the route's model; ``vector`` is the query's embedding when the
        semantic cache already computed it (used by an encoder bank; an n-gram bank computes its own features)."""
        query, chars = prompt_texts(body)
        headers: dict[str, str] = {}
        if self.header_names:
            for n, v in raw_headers:
                name = n.decode("latin-1")
                if name in self.header_names:
                    headers[name] = v.decode("latin-1")
        r = modelroute.Request(key, path, headers, query, chars)
        chosen = modelroute.choose(self.policy, r)
        if chosen is not None:
            return self.members[chosen.member], chosen
        auto = self.policy.auto
        assert self.bank is not None
        if self.bank.ngram_dim is not None:  # ~150 µs: on the event loop, no thread hop
            vector = self.bank.features(query) if query else None
        elif vector is None and query:  # an encoder bank, and the semantic cache did not embed the query
            vector = (await asyncio.to_thread(self.embedder.embed, [query], modelroute.ROUTER_MAX_TOKENS))[0]
        assert auto is not None
        score = (
            float(self.bank.need_large.mean())
            if vector is None
            else self.bank.score(np.asarray(vector), auto.k)
        )
        choice = modelroute.auto_choice(auto, score)
        return self.members[choice.member], choice
