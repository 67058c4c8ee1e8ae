"""Classifies a request as sensitive (must stay self-hosted) or general: header values, the key's pinned
policy, and detectors over every string leaf (and every key and number) of the body the gateway forwards.

The rule, a contract (README "Hybrid routing"): any signal that says sensitive makes the request sensitive.
Header values are gathered across repeated fields and comma lists, and a request is general by header only
when every value is a general word; any other value, known or not, is sensitive. A body larger than
`max_scan_bytes`, or one whose candidates exceed the scan budget, is sensitive without a verdict (fail closed).

Detectors (emails, Luhn-valid card numbers with their issuer's first digit, US SSNs with or without
separators after the word SSN, and a catalogue of secret shapes taken from gitleaks' rules) run on RE2
(google-re2): linear time by construction. Measured on this machine: Python's `re` took 2.0 s for a 40 KB run
of address characters before an `@` (quadratic: hours at the 4 MiB body limit); RE2 takes 60 µs for it and
11 ms for 4 MiB of such runs. RE2 costs ~0.5 µs more than `re` per call on a short prompt, so a detector
still runs only on text holding its hint (an `@`, a digit). Text is normalised first: NFKC (fullwidth digits
and `＠`, no-break and other spaces), format characters such as zero-width spaces removed; digits match as
Unicode decimal digits (`\\p{Nd}`).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import re2

SENSITIVE: Literal["sensitive"] = "sensitive"
GENERAL: Literal["general"] = "general"
Class = Literal["sensitive", "general"]
# Header words: these say general; every other value (sensitive, private, typos, unknown words) says sensitive.
GENERAL_WORDS = frozenset({b"general", b"public"})

# Why a request got its class (the access log's `why`, the metric label).
WHY_HEADER = "header"
WHY_KEY = "key-policy"
WHY_DEFAULT = "default"
WHY_SCAN_LIMIT = "scan-limit"
DETECTOR_WHY = "detector:"

_ND = r"\p{Nd}"
EMAIL = r"[\p{L}\p{Nd}.!#$%&'*+/=?^_`{|}~-]+@[\p{L}\p{Nd}-]+(?:\.[\p{L}\p{Nd}-]+)*\.\p{L}{2,}"
# A run of 13 or more digits with up to three separators (spaces, dots, dashes, slashes, underscores, line
# ends) between them; `card_in` looks for the number inside the run.
CARD = rf"{_ND}(?:[\s./_-]{{0,3}}{_ND}){{12,}}"
SSN = (
    rf"{_ND}{{3}}[ .-]{_ND}{{2}}[ .-]{_ND}{{4}}"
    rf"|(?i:\bssn\b|social[\s_-]*security(?:[\s_-]*(?:number|no|num|nr|#))?)[^\p{{Nd}}\n]{{0,12}}"
    rf"{_ND}{{3}}[ .-]?{_ND}{{2}}[ .-]?{_ND}{{4}}"
)
# Secret shapes (gitleaks' rules, simplified to what is distinctive): provider tokens, private keys, JWTs,
# bearer headers, credentials in URLs, and `name: value` assignments of secret-named fields.
SECRET = "|".join(
    (
        r"\bsk-(?:proj-|svcacct-|admin-|ant-(?:api|admin)\d\d-)?[A-Za-z0-9_-]{20,}",  # OpenAI, Anthropic
        r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{10,}",  # Stripe secret and restricted keys
        r"\bgh[pousr]_[A-Za-z0-9]{30,}",
        r"\bgithub_pat_[A-Za-z0-9_]{40,}",
        r"\bglpat-[A-Za-z0-9_-]{20,}",
        r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b",  # AWS key ids
        r"(?i:aws.{0,24}?(?:secret|key)[^\n]{0,24}?[:=\s\"'>]{1,5})[A-Za-z0-9/+]{40}\b",  # AWS secret access keys
        r"\bAIza[0-9A-Za-z_-]{35}",
        r"\bya29\.[0-9A-Za-z_-]{20,}",  # Google API keys, OAuth tokens
        r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
        r"hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+",
        r"\bhf_[A-Za-z]{30,}",
        r"\bnpm_[A-Za-z0-9]{36}",
        r"\bpypi-AgE[A-Za-z0-9_-]{50,}",
        r"\bSG\.[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{20,}",
        r"\bSK[0-9a-fA-F]{32}\b",
        r"\bdapi[a-h0-9]{32}\b",
        r"\bshp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}",
        r"\bdo[por]_v1_[a-f0-9]{64}",
        r"AccountKey=[A-Za-z0-9+/=]{40,}",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
        r"PuTTY-User-Key-File-\d",
        r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWTs
        r"(?i:\bauthorization\s*[:=]\s*[\"']?(?:bearer|basic|token)\s+)[A-Za-z0-9._~+/-]{12,}",
        r"(?i:\b[a-z][a-z0-9+.-]{1,20}://[^\s:/@\"']{1,64}:[^\s/@\"']{3,128}@)",  # user:password@ in URLs
        # a value, not code: `password = os.environ[...]` or `token = tokenizer.encode(text)` is no secret
        r"(?i:(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?key|client[_-]?secret|auth[_-]?token"
        r"|access[_-]?token|token)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9!@#$%^&*_+=/~.-]{6,}(?:[\s\"',;]|$))",
    )
)

Check = Callable[[str, Any], bool]


class ScanLimit(Exception):
    """The text is too large, or makes too many candidates, to be judged within the scan budget."""


def luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = ord(ch) - 48
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _ascii_digits(s: str) -> str:
    return s if s.isascii() else "".join(str(unicodedata.digit(c)) if c.isdigit() else c for c in s)


_GROUPS = re.compile(r"\d+")
CARD_FIRST_DIGITS = "23456"  # Mastercard 2-series, Amex/Diners/JCB, Visa, Mastercard, Discover/UnionPay
CARD_OTHER_PREFIXES = ("1800",)  # 15-digit JCB


def card_in(run: str) -> bool:
    """Whether whole digit groups of the run form a 13-19-digit number that passes the Luhn check and starts
    with an issuer's digit: the card in "1 4111 1111 1111 1111" or "4111-1111-1111-1111 42" is found, a single
    17-digit number is judged whole. Linear: at most 19 digits are joined from each group."""
    groups = _GROUPS.findall(_ascii_digits(run))
    n = len(groups)
    for i in range(n):
        if groups[i][0] not in CARD_FIRST_DIGITS and not groups[i].startswith(CARD_OTHER_PREFIXES):
            continue
        digits = ""
        j = i
        while j < n:
            digits += groups[j]
            j += 1
            if len(digits) > 19:
                break
            if len(digits) >= 13 and luhn_ok(digits):
                return True
    return False


def ssn_ok(m: str) -> bool:
    """Area 000, 666 and 9xx, group 00 and serial 0000 are never issued (m: the last 9 digits matter)."""
    digits = "".join(_GROUPS.findall(_ascii_digits(m)))[-9:]
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return (
        len(digits) == 9
        and area not in ("000", "666")
        and area[0] != "9"
        and group != "00"
        and serial != "0000"
    )


def _card(text: str, m: Any) -> bool:
    run = m.group(0)
    if len(run) > MAX_RUN_CHARS:
        raise ScanLimit(f"a run of {len(run)} digits and separators")
    return card_in(run)


def _ssn(text: str, m: Any) -> bool:
    start, end = m.span()
    # Not part of a longer digit run (RE2 has no lookbehind: the neighbours are checked here).
    if (start > 0 and text[start - 1].isdigit()) or (end < len(text) and text[end].isdigit()):
        return False
    return ssn_ok(m.group(0))


@dataclass(frozen=True, slots=True)
class Detector:
    name: str
    pattern: str
    hint: Callable[[str], bool]  # False only when the pattern cannot match the text
    check: Check | None = None  # a candidate is a finding only if this holds


_DIGIT = re.compile(r"\d")


def _has_digit(text: str) -> bool:
    return _DIGIT.search(text) is not None


def _always(text: str) -> bool:
    return True


DETECTORS: dict[str, Detector] = {
    "email": Detector("email", EMAIL, lambda t: "@" in t),
    "credit-card": Detector("credit-card", CARD, _has_digit, _card),
    "ssn": Detector("ssn", SSN, _has_digit, _ssn),
    "secret": Detector("secret", SECRET, _always),
}


@functools.cache
def _format_chars() -> re.Pattern[str]:
    """Format characters (zero-width spaces and joiners, soft hyphens, bidi marks, BOM, tags), removed before
    matching: one character class, built once from the Unicode database (~0.15 s, on the first non-ASCII text).
    Python's `re` here, not RE2: a class with `+` cannot backtrack, and RE2's Python `sub` calls back into Python
    for every match (220 ms against 11 ms for 60,000 zero-width spaces in a 1 MiB body)."""
    points = [i for i in range(0x110000) if unicodedata.category(chr(i)) == "Cf"]
    ranges: list[list[int]] = []
    for i in points:
        if ranges and ranges[-1][1] == i - 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    cls = "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges
    )
    return re.compile(f"[{cls}]+")


MAX_CANDIDATES = 512  # candidates a request may make the detectors check in Python before it is sensitive
MAX_RUN_CHARS = 1024  # a digit run longer than this is not judged group by group: the request is sensitive
# Texts up to this size go through the RE2 set first; its DFA cannot run out of memory on them (RE2::Set does
# not fall back to the NFA as a single RE2 does, so a larger text goes to each detector's own search).
PREFILTER_MAX_CHARS = 64 * 1024


def normalise(text: str) -> str:
    """NFKC, format characters removed. ASCII text is returned as is (nothing in it changes)."""
    if text.isascii():
        return text
    return _format_chars().sub("", unicodedata.normalize("NFKC", text))


def leaves(node: Any) -> list[str]:
    """Every string, key and number in a parsed JSON document, in document order (iterative: any depth)."""
    out: list[str] = []
    stack = [node]
    pop, push, add = stack.pop, stack.append, out.append
    while stack:
        n = pop()
        t = type(n)
        if t is str:
            add(n)
        elif t is dict:
            for k, v in reversed(n.items()):
                push(v)
                push(k)
        elif t is list:
            stack.extend(reversed(n))
        elif t is int or t is float:
            add(repr(n))
    return out


class Verdict(NamedTuple):
    sensitive: bool
    why: str


class Classifier:
    def __init__(
        self,
        detectors: Iterable[str],
        default: str = SENSITIVE,
        header: str = "x-data-sensitivity",
        key_policy: Mapping[str, str] | None = None,
        max_scan_bytes: int = 1 << 20,
    ) -> None:
        self.detectors = tuple(detectors)
        unknown = [d for d in self.detectors if d not in DETECTORS]
        if unknown:
            raise ValueError(f"unknown sensitivity detectors {unknown}; known: {sorted(DETECTORS)}")
        self.default = default
        self.header = header.lower().encode()
        self.key_policy = dict(key_policy or {})
        self.max_scan_bytes = max_scan_bytes
        opts = re2.Options()
        opts.max_mem = 64 << 20  # the DFA's cache: enough for the secret catalogue on megabytes of text
        # One pattern per detector, not one alternation: a digit run that is no card must not hide an SSN in it.
        self._detectors = [(DETECTORS[n], re2.compile(DETECTORS[n].pattern, opts)) for n in self.detectors]
        # One RE2 pass over a short text says which detectors have a candidate at all (1.5 µs for a typical
        # prompt, against 2-2.5 µs for each detector's own search). The set is called below its Python wrapper.
        self._prefilter: Callable[[bytes], list[int]] = lambda b: []
        if self._detectors:
            rset = re2.Set.SearchSet(opts)
            for det, _ in self._detectors:
                rset.Add(det.pattern)
            rset.Compile()
            self._prefilter = rset._set.Match

    # ------------------------------------------------------------------ detectors

    def detect(self, text: str) -> str | None:
        """The detector whose first real finding starts earliest in the (normalised) text, or None; raises
        ScanLimit when the text makes more candidates than the budget allows."""
        return self._scan(normalise(text), hints=True)

    def _scan(self, text: str, hints: bool = False) -> str | None:
        """Every detector over the text, or with `hints` only those the prefilter says have a candidate."""
        if hints:
            if len(text) <= PREFILTER_MAX_CHARS:
                found = self._prefilter(text.encode("utf-8", "replace"))
                if not found:
                    return None
                candidates = [self._detectors[i] for i in sorted(found)]
            else:
                candidates = [(d, rx) for d, rx in self._detectors if d.hint(text)]
        else:
            candidates = self._detectors
        first: tuple[int, str] | None = None
        budget = MAX_CANDIDATES
        for det, rx in candidates:
            for m in rx.finditer(text):
                if det.check is not None:
                    budget -= 1
                    if budget < 0:
                        raise ScanLimit(f"more than {MAX_CANDIDATES} candidates")
                    if not det.check(text, m):
                        continue
                if first is None or m.start() < first[0]:
                    first = (m.start(), det.name)
                break
        return first[1] if first else None

    def scan_body(self, body: Any) -> str | None:
        """The first detector that finds anything in any leaf of the body; ScanLimit above the budget."""
        parts = leaves(body)
        size = sum(map(len, parts))
        if size > self.max_scan_bytes:
            raise ScanLimit(f"{size} characters to scan, over the limit of {self.max_scan_bytes}")
        return self.detect(parts[0] if len(parts) == 1 else "\n".join(parts))

    # ------------------------------------------------------------------ the rule

    @staticmethod
    def header_class(values: Iterable[bytes]) -> Class | None:
        """The class the header's values say, gathered across repeated fields and comma lists: general only if
        every value is a general word; None without any value."""
        seen = False
        for raw in values:
            for v in raw.split(b","):
                v = v.strip().lower()
                if not v:
                    continue
                if v not in GENERAL_WORDS:
                    return SENSITIVE
                seen = True
        return GENERAL if seen else None

    def classify(self, header_values: Iterable[bytes], body: Any, key_name: str | None = None) -> Verdict:
        """Sensitive wins: the header, the key's pinned policy, then the detectors over the whole body; a request
        is general only if something says general (header, key) or the default is general."""
        said = self.header_class(header_values)
        if said == SENSITIVE:
            return Verdict(True, WHY_HEADER)
        policy = self.key_policy.get(key_name) if key_name is not None else None
        if policy == SENSITIVE:
            return Verdict(True, WHY_KEY)
        if self._detectors:
            try:
                found = self.scan_body(body)
            except ScanLimit:
                return Verdict(True, WHY_SCAN_LIMIT)
            if found:
                return Verdict(True, DETECTOR_WHY + found)
        if said == GENERAL:
            return Verdict(False, WHY_HEADER)
        if policy == GENERAL:
            return Verdict(False, WHY_KEY)
        return Verdict(self.default != GENERAL, WHY_DEFAULT)
