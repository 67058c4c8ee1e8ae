"""Classifies a request as sensitive (must stay self-hosted) or general, by header, key policy and detectors.

Detectors: email addresses, credit-card numbers (13-19 digits that pass the Luhn check), US SSNs, and
secrets (API-key shapes: sk-…, AKIA…, ghp_…, xox…-, PEM private keys, bearer/password assignments).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

EMAIL = r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
# A run of 13 or more digits, single spaces or dashes between them; `card_in` looks for the number inside it.
# The digit patterns start with a digit (not a lookbehind) so the regex engine skips other characters in C:
# 3-4x faster per character. The checks that need the whole match are code (`card_in`, `ssn_ok`).
CARD = r"\d(?<!\d\d)(?:[ -]?\d){12,}(?!\d)"
SSN = r"\d(?<!\d\d)\d\d[- ]\d\d[- ]\d{4}(?!\d)"
SECRET = (r"(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abpr]-[A-Za-z0-9-]{10,}"
          r"|-----BEGIN [A-Z ]*PRIVATE KEY-----|(?i:(?:password|passwd|secret|api[_-]?key|token)\s*[:=]\s*\S{6,}))")

PATTERNS = {"email": EMAIL, "credit-card": CARD, "ssn": SSN, "secret": SECRET}

# What each pattern cannot match without: substrings (found by C substring search) and, for the digit
# patterns, a digit. Most prompts contain none of them, and each pattern costs 10-50 µs per 1,000
# characters, so a pattern runs only on texts that hold its hint.
_SUBSTRINGS = {"email": ("@",), "credit-card": (), "ssn": (), "secret": ("sk-", "AKIA", "xox", "-----BEGIN", ":", "=")}
_NEEDS_DIGIT = {"credit-card", "ssn"}
_DIGIT = re.compile(r"\d")
_GITHUB_TOKEN = re.compile(r"gh[pousr]_")


def _hinted(name: str, text: str, has_digit: bool) -> bool:
    """False only when the named pattern cannot match the text."""
    if name in _NEEDS_DIGIT:
        return has_digit
    for h in _SUBSTRINGS[name]:
        if h in text:
            return True
    return name == "secret" and "_" in text and _GITHUB_TOKEN.search(text) is not None


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


def ssn_ok(m: str) -> bool:
    """Area 000, 666 and 9xx, group 00 and serial 0000 are never issued."""
    area, group, serial = m[:3], m[4:6], m[7:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def card_in(run: str) -> bool:
    """Whether whole digit groups of the run form a 13-19-digit number that passes the Luhn check: the card in
    "1 4111 1111 1111 1111" or "4111-1111-1111-1111 42" is found, a single 17-digit number is judged whole."""
    groups = [g for g in re.split(r"[ -]", run) if g]
    for i in range(len(groups)):
        digits = ""
        for g in groups[i:]:
            digits += g
            if len(digits) > 19:
                break
            if len(digits) >= 13 and luhn_ok(digits):
                return True
    return False


class Classifier:
    def __init__(self, detectors: Iterable[str], default: str = "sensitive", header: str = "x-data-sensitivity") -> None:
        self.detectors = tuple(detectors)
        self.default = default
        self.header = header.lower().encode()
        names = [d for d in self.detectors if d in PATTERNS]
        # One pattern per detector, not one alternation: a digit run that is no card must not hide an SSN in it.
        self._patterns = [(n, re.compile(PATTERNS[n])) for n in names]

    def detect(self, text: str) -> str | None:
        """The detector whose first real match starts earliest in the text, or None."""
        return self._scan(text, hints=True)

    def _scan(self, text: str, hints: bool = False) -> str | None:
        """Every pattern over the text, or with `hints` only those whose hint the text holds."""
        first: tuple[int, str] | None = None
        has_digit = hints and _DIGIT.search(text) is not None
        for name, rx in self._patterns:
            if hints and not _hinted(name, text, has_digit):
                continue
            for m in rx.finditer(text):
                if (name == "credit-card" and not card_in(m.group(0))) or (name == "ssn" and not ssn_ok(m.group(0))):
                    continue
                if first is None or m.start() < first[0]:
                    first = (m.start(), name)
                break
        return first[1] if first else None

    def classify(self, header_value: bytes | None, text: str, key_policy: str | None = None) -> tuple[str, str]:
        """(class, why). Sensitive wins: any signal that says sensitive makes the request sensitive."""
        if header_value is not None:
            v = header_value.strip().lower()
            if v in (b"sensitive", b"private", b"confidential"):
                return "sensitive", "header"
        if key_policy == "sensitive":
            return "sensitive", "key-policy"
        found = self.detect(text)
        if found:
            return "sensitive", f"detector:{found}"
        if header_value is not None and header_value.strip().lower() in (b"general", b"public"):
            return "general", "header"
        if key_policy == "general":
            return "general", "key-policy"
        return self.default, "default"
