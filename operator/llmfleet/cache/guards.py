"""Guards for the semantic cache beyond one cosine: a question may reuse a cached answer only when both agree on
their numbers (with units) and on negation, the near misses a sentence encoder scores as near-identical
("How do I lose 5 kg in a month?" vs "… 15 kg …", "Can I …" vs "Can't I …").

``signature`` reduces a question to what must agree: the multiset of its quantities (digits or number words,
with a unit when one follows: ``5kg``, ``2mo``, ``30pct``) and the parity of its negations. The cache folds the
signature into the partition a lookup searches (``cache/keys.py``'s context tag), so the vector search only
ever sees entries that agree: no extra round trip, and a guard that cannot be skipped. Deterministic, pure,
~10 µs a question (regular expressions over the lower-cased text).
"""

from __future__ import annotations

import re

_WORD_NUMBERS = {
    w: i
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
}
_WORD_NUMBERS.update({"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80})
_WORD_NUMBERS.update({"ninety": 90, "hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9})
_WORD_NUMBERS.update({"dozen": 12, "half": 0.5, "twice": 2, "double": 2, "triple": 3})
_WORD_NUMBERS.pop("one")  # "which one", "one of": a pronoun far more often than a quantity

_UNITS = {
    "kg": ("kg", "kgs", "kilo", "kilos", "kilogram", "kilograms"),
    "g": ("g", "gram", "grams"),
    "lb": ("lb", "lbs", "pound", "pounds"),
    "km": ("km", "kms", "kilometer", "kilometers", "kilometre", "kilometres"),
    "mi": ("mi", "mile", "miles"),
    "m": ("m", "meter", "meters", "metre", "metres"),
    "cm": ("cm", "centimeter", "centimeters"),
    "ft": ("ft", "foot", "feet"),
    "in": ("inch", "inches"),
    "pct": ("%", "percent", "pct"),
    "usd": ("$", "usd", "dollar", "dollars", "bucks"),
    "eur": ("€", "eur", "euro", "euros"),
    "inr": ("₹", "inr", "rupee", "rupees", "rs"),
    "gb": ("gb", "gigabyte", "gigabytes"),
    "mb": ("mb", "megabyte", "megabytes"),
    "tb": ("tb", "terabyte", "terabytes"),
    "s": ("s", "sec", "secs", "second", "seconds"),
    "min": ("min", "mins", "minute", "minutes"),
    "h": ("h", "hr", "hrs", "hour", "hours"),
    "d": ("day", "days"),
    "wk": ("week", "weeks", "wk", "wks"),
    "mo": ("month", "months"),
    "yr": ("year", "years", "yr", "yrs"),
    "c": ("°c", "celsius"),
    "f": ("°f", "fahrenheit"),
}
_UNIT = {alias: unit for unit, aliases in _UNITS.items() for alias in aliases}
_NEGATIONS = frozenset(
    ["not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "cannot", "without", "nowhere"]
)
# A token: a currency sign, a number (1,000.5 / 5k), a word (with an apostrophe), or %.
_TOKEN = re.compile(r"[$€₹]|\d[\d,]*(?:\.\d+)?(?:k\b)?|[a-z°]+(?:'[a-z]+)?|%")


def _number(tok: str) -> float | None:
    if tok[0].isdigit():
        scale = 1000 if tok.endswith("k") else 1
        try:
            return float(tok.rstrip("k").replace(",", "")) * scale
        except ValueError:
            return None
    return _WORD_NUMBERS.get(tok)


def _fmt(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def signature(text: str) -> str:
    """What two questions must share for one to reuse the other's answer: quantities with units, negation."""
    tokens = _TOKEN.findall(text.lower().replace("’", "'"))
    quantities: list[str] = []
    negations = 0
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in _NEGATIONS or tok.endswith("n't"):
            negations += 1
        prefix = _UNIT.get(tok) if tok in ("$", "€", "₹") else None
        value = _number(tokens[i + 1]) if prefix and i + 1 < len(tokens) else _number(tok)
        if value is not None:
            if prefix:
                i += 1
                unit = prefix
            else:
                unit = _UNIT.get(tokens[i + 1], "") if i + 1 < len(tokens) else ""
                if unit:
                    i += 1
            quantities.append(_fmt(value) + unit)
        i += 1
    return f"n={','.join(sorted(quantities))};neg={negations % 2}"
