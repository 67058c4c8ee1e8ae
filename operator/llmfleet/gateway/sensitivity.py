"""Classifies a request as sensitive (must stay self-hosted) or general, by header, key policy and detectors.

Detectors: email addresses, credit-card numbers (13-19 digits that pass the Luhn check), US SSNs, and
secrets (API-key shapes: sk-…, AKIA…, ghp_…, xox…-, PEM private keys, bearer/password assignments).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

EMAIL = r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
CARD = r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)"
SSN = r"(?<!\d)(?!000|666|9\d\d)\d{3}[- ](?!00)\d{2}[- ](?!0000)\d{4}(?!\d)"
SECRET = (r"(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abpr]-[A-Za-z0-9-]{10,}"
          r"|-----BEGIN [A-Z ]*PRIVATE KEY-----|(?i:(?:password|passwd|secret|api[_-]?key|token)\s*[:=]\s*\S{6,}))")

PATTERNS = {"email": EMAIL, "credit-card": CARD, "ssn": SSN, "secret": SECRET}

# What each pattern cannot match without: substrings (found by C substring search) and, for the digit
# patterns, a digit. Most prompts contain none of them, and the combined pattern costs ~20 µs per 100
# characters (every position starts an e-mail and a card attempt), so it runs only when a hint is present.
_SUBSTRINGS = {"email": ("@",), "credit-card": (), "ssn": (), "secret": ("sk-", "AKIA", "xox", "-----BEGIN", ":", "=")}
_NEEDS_DIGIT = {"credit-card", "ssn"}
_DIGIT = re.compile(r"\d")
_GITHUB_TOKEN = re.compile(r"gh[pousr]_")


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


class Classifier:
    def __init__(self, detectors: Iterable[str], default: str = "sensitive", header: str = "x-data-sensitivity") -> None:
        self.detectors = tuple(detectors)
        self.default = default
        self.header = header.lower().encode()
        names = [d for d in self.detectors if d in PATTERNS]
        self._regex = re.compile("|".join(f"(?P<{n.replace('-', '_')}>{PATTERNS[n]})" for n in names)) if names else None
        self._substrings = tuple(h for n in names for h in _SUBSTRINGS[n])
        self._digits = any(n in _NEEDS_DIGIT for n in names)
        self._github = "secret" in names

    def _hinted(self, text: str) -> bool:
        """False only when no enabled pattern can match the text."""
        for h in self._substrings:
            if h in text:
                return True
        if self._digits and _DIGIT.search(text):
            return True
        return self._github and "_" in text and _GITHUB_TOKEN.search(text) is not None

    def detect(self, text: str) -> str | None:
        """The first detector that fires on the text, or None."""
        if self._regex is None or not self._hinted(text):
            return None
        return self._scan(text)

    def _scan(self, text: str) -> str | None:
        """The full pattern over the text (what `detect` does when the prefilter lets the text through)."""
        assert self._regex is not None
        for m in self._regex.finditer(text):
            kind = m.lastgroup or ""
            if kind == "credit_card":
                digits = re.sub(r"\D", "", m.group(0))
                if not (13 <= len(digits) <= 19 and luhn_ok(digits)):
                    continue
            return kind.replace("_", "-")
        return None

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
