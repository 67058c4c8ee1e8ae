"""Benchmark: the gateway's sensitivity detectors, measured for precision and recall on a labelled set of
real-looking text, and for their scan cost per KiB against Python's `re` in the same run.

The labelled set (bench/data/detectors.jsonl, committed; --regenerate rebuilds it) is made with Faker from a
fixed seed: sentences that hold one sensitive value (emails, card numbers of every brand Faker knows in the
ways people write them, SSNs, secrets in the shapes providers issue), and sentences that hold look-alikes that
must pass (phone numbers, ISBN-13 and EAN-13 codes, IBANs, UUIDs, SHA digests, IP addresses, dates, prices,
order numbers, versions, code that names passwords and tokens without holding one). One JSON line per detector
(precision, recall, false positives and negatives with examples), then cost lines.

    python bench/detectors.py [--regenerate] [--seed 7] [--per-kind 300]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import string
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data" / "detectors.jsonl"
sys.path.insert(0, str(ROOT / "operator"))

from llmfleet.gateway.sensitivity import Classifier  # noqa: E402

KINDS = ("email", "credit-card", "ssn", "secret")
# The previous detectors (Python's `re`, ASCII only, a smaller secret catalogue): the same-run baseline for cost.
PREVIOUS = {
    "email": r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "credit-card": r"\d(?<!\d\d)(?:[ -]?\d){12,}(?!\d)",
    "ssn": r"\d(?<!\d\d)\d\d[- ]\d\d[- ]\d{4}(?!\d)",
    "secret": (
        r"(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}"
        r"|xox[abpr]-[A-Za-z0-9-]{10,}|-----BEGIN [A-Z ]*PRIVATE KEY-----"
        r"|(?i:(?:password|passwd|secret|api[_-]?key|token)\s*[:=]\s*\S{6,}))"
    ),
}


def _rand(rnd: random.Random, alphabet: str, n: int) -> str:
    return "".join(rnd.choice(alphabet) for _ in range(n))


def _secrets(rnd: random.Random) -> list[str]:
    an = string.ascii_letters + string.digits
    up = string.ascii_uppercase + string.digits
    b64 = an + "/+"
    jwt_part = an + "-_"
    return [
        "sk-proj-" + _rand(rnd, an + "-_", 48),
        "sk-" + _rand(rnd, an, 48),
        "sk-ant-api03-" + _rand(rnd, an + "-_", 90),
        "sk_live_" + _rand(rnd, an, 24),
        "rk_live_" + _rand(rnd, an, 24),
        "sk_test_" + _rand(rnd, an, 24),
        "ghp_" + _rand(rnd, an, 36),
        "gho_" + _rand(rnd, an, 36),
        "github_pat_" + _rand(rnd, an + "_", 82),
        "glpat-" + _rand(rnd, an + "-_", 20),
        "AKIA" + _rand(rnd, up, 16),
        "ASIA" + _rand(rnd, up, 16),
        f"aws_secret_access_key = {_rand(rnd, b64, 40)}",
        f"AWS_SECRET_ACCESS_KEY: {_rand(rnd, b64, 40)}",
        "AIza" + _rand(rnd, an + "-_", 35),
        "ya29." + _rand(rnd, an + "-_", 60),
        "xoxb-" + _rand(rnd, string.digits, 12) + "-" + _rand(rnd, an, 24),
        "xoxp-" + _rand(rnd, string.digits, 12),
        "hf_" + _rand(rnd, string.ascii_letters, 34),
        "npm_" + _rand(rnd, an, 36),
        "SG." + _rand(rnd, an + "-_", 22) + "." + _rand(rnd, an + "-_", 43),
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEow" + _rand(rnd, b64, 40),
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----",
        "-----BEGIN EC PRIVATE KEY-----",
        "eyJ" + _rand(rnd, jwt_part, 30) + ".eyJ" + _rand(rnd, jwt_part, 40) + "." + _rand(rnd, jwt_part, 43),
        "Authorization: Bearer " + _rand(rnd, an, 40),
        f"password: {_rand(rnd, an + '!#%', 14)}",
        f"DB_PASSWORD={_rand(rnd, an, 16)}",
        f'api_key = "{_rand(rnd, an, 32)}"',
        f"postgres://app:{_rand(rnd, an, 12)}@db.internal:5432/prod",
        f"redis://default:{_rand(rnd, an, 20)}@cache:6379",
    ]


def _card(fake: Any, rnd: random.Random) -> str:
    number = fake.credit_card_number(
        card_type=rnd.choice(
            ["visa16", "visa13", "mastercard", "amex", "discover", "jcb15", "jcb16", "diners"]
        )
    )
    style = rnd.choice(["plain", "space4", "dash4", "space-amex"])
    if style == "space4":
        return " ".join(number[i : i + 4] for i in range(0, len(number), 4))
    if style == "dash4":
        return "-".join(number[i : i + 4] for i in range(0, len(number), 4))
    if style == "space-amex" and len(number) == 15:
        return f"{number[:4]} {number[4:10]} {number[10:]}"
    return str(number)


def _negatives(fake: Any, rnd: random.Random) -> list[str]:
    return [
        f"Call me at {fake.phone_number()}",
        f"ISBN {fake.isbn13()}",
        f"barcode {fake.ean13()}",
        f"IBAN {fake.iban()}",
        f"request id {fake.uuid4()}",
        f"commit {fake.sha1()}",
        f"checksum {fake.sha256()}",
        f"server {fake.ipv4()} port {fake.port_number()}",
        f"on {fake.date()} at {fake.time()}",
        f"total ${fake.pydecimal(left_digits=4, right_digits=2, positive=True)}",
        f"order #{fake.random_number(digits=10, fix_len=True)}",
        f"version {fake.numerify('#.##.#')}",
        f"tracking {fake.random_number(digits=12, fix_len=True)}",
        f"zip {fake.zipcode()} {fake.city()}",
        "password = os.environ['DB_PASSWORD']",
        "token = tokenizer.encode(text)",
        "max_tokens: 1024",
        "the SSN format is XXX-XX-XXXX",
        f"see {fake.url()}",
        f"user @{fake.user_name()} on the forum",
        f"{fake.random_int(1, 12)} x {fake.random_int(100, 999)} = {fake.random_int(1000, 99999)}",
        f"account {fake.bban()}",
        f"lat {fake.latitude()} lon {fake.longitude()}",
        f"phone {fake.msisdn()}",
        f"ticket JIRA-{fake.random_int(1000, 99999)}",
    ]


def generate(seed: int, per_kind: int) -> list[dict[str, Any]]:
    from faker import Faker

    fake = Faker(["en_US", "en_GB", "de_DE", "fr_FR"])
    Faker.seed(seed)
    rnd = random.Random(seed)
    us = fake["en_US"]  # the detector is for US SSNs; other locales' ssn() are other national ids
    values: dict[str, Any] = {
        "email": lambda: rnd.choice(
            [fake.email(), fake.company_email(), fake.free_email(), fake.ascii_email()]
        ),
        "credit-card": lambda: _card(fake, rnd),
        "ssn": lambda: rnd.choice(
            [
                us.ssn(),
                "SSN " + us.ssn().replace("-", ""),
                us.ssn().replace("-", " "),
                "social security number " + us.ssn(),
            ]
        ),
        "secret": lambda: rnd.choice(_secrets(rnd)),
    }
    samples: list[dict[str, Any]] = []
    for kind in KINDS:
        for _ in range(per_kind):
            before, after = (
                fake.sentence(nb_words=rnd.randint(3, 12)),
                fake.sentence(nb_words=rnd.randint(0, 10)),
            )
            samples.append({"text": f"{before} {values[kind]()} {after}".strip(), "label": kind})
    for _ in range(per_kind * 2):
        before, after = fake.sentence(nb_words=rnd.randint(3, 12)), fake.sentence(nb_words=rnd.randint(0, 8))
        samples.append(
            {"text": f"{before} {rnd.choice(_negatives(fake, rnd))} {after}".strip(), "label": None}
        )
    for _ in range(per_kind):
        samples.append({"text": fake.paragraph(nb_sentences=rnd.randint(2, 6)), "label": None})
    rnd.shuffle(samples)
    return samples


def load_set() -> list[dict[str, Any]]:
    return [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]


def quality(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per detector, judged alone: recall over its positives, precision over its findings on its positives and
    on the look-alikes (a finding on another kind's value is right for routing and not counted); then the
    routing verdict of all detectors together."""
    out = []
    for kind in KINDS:
        c = Classifier([kind])
        tp = fp = fn = 0
        fps: list[str] = []
        fns: list[str] = []
        for s in samples:
            found = c.detect(s["text"]) is not None
            if found and s["label"] == kind:
                tp += 1
            elif found and s["label"] is None:
                fp += 1
                fps.append(s["text"])
            elif s["label"] == kind:
                fn += 1
                fns.append(s["text"])
        out.append(
            {
                "case": "quality",
                "detector": kind,
                "samples": len(samples),
                "positives": sum(1 for s in samples if s["label"] == kind),
                "true_positives": tp,
                "false_positives": fp,
                "false_negatives": fn,
                "precision": round(tp / (tp + fp), 4) if tp + fp else None,
                "recall": round(tp / (tp + fn), 4) if tp + fn else None,
                "false_positive_examples": fps[:3],
                "false_negative_examples": fns[:3],
            }
        )
    both = Classifier(KINDS)
    flagged = [(s["label"] is not None, both.detect(s["text"]) is not None) for s in samples]
    tp = sum(1 for pos, f in flagged if pos and f)
    fp = sum(1 for pos, f in flagged if not pos and f)
    fn = sum(1 for pos, f in flagged if pos and not f)
    out.append(
        {
            "case": "quality",
            "detector": "routing (all four)",
            "samples": len(samples),
            "true_positives": tp,
            "false_positives": fp,
            "false_negatives": fn,
            "precision": round(tp / (tp + fp), 4),
            "recall": round(tp / (tp + fn), 4),
        }
    )
    return out


def _per_kib(fn: Any, text: str, rounds: int) -> float:
    fn(text)
    t0 = time.perf_counter()
    for _ in range(rounds):
        fn(text)
    return (time.perf_counter() - t0) / rounds / (len(text.encode()) / 1024) * 1e6


def cost(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Microseconds per KiB of text: the gateway's scan (normalisation, RE2 set prefilter, then the detectors
    that have a candidate) against the previous detectors' four patterns on Python's `re` (searched, no checks),
    on clean prose, prose with values, and non-ASCII prose; then a 40 KB run of address characters before an `@`."""
    c = Classifier(KINDS)
    py = [re.compile(PREVIOUS[k]) for k in KINDS]

    def python_re(text: str) -> bool:
        return any(rx.search(text) for rx in py)

    clean = "\n".join(s["text"] for s in samples if s["label"] is None)[: 64 * 1024]
    mixed = "\n".join(s["text"] for s in samples)[: 64 * 1024]
    unicode_text = ("Überprüfen Sie die Lieferung nach Köln für Frau Müller — ½ kg, № ４２. " * 1000)[
        : 32 * 1024
    ]
    lines = []
    for name, text in (
        ("clean prose", clean),
        ("prose with values", mixed),
        ("non-ASCII prose", unicode_text),
    ):
        lines.append(
            {
                "case": "cost",
                "text": name,
                "kib": round(len(text.encode()) / 1024, 1),
                "gateway_us_per_kib": round(_per_kib(c.detect, text, 20), 1),
                "previous_re_us_per_kib": round(_per_kib(python_re, text, 20), 1),
            }
        )
    short = "Summarise the benefits of continuous batching in two sentences."
    t0 = time.perf_counter()
    for _ in range(20000):
        c.detect(short)
    lines.append(
        {
            "case": "cost",
            "text": "typical prompt (64 chars)",
            "gateway_us_per_call": round((time.perf_counter() - t0) / 20000 * 1e6, 2),
        }
    )
    attack = "a" * 40_000 + "@"
    t0 = time.perf_counter()
    c.detect(attack)
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    re.compile(PREVIOUS["email"]).search(attack[:10_000])
    theirs = (time.perf_counter() - t0) * 16  # quadratic: a quarter of the input costs a sixteenth
    lines.append(
        {
            "case": "cost",
            "text": "40 KB of address characters before an @",
            "gateway_ms": round(ours * 1000, 3),
            "previous_re_ms_estimated": round(theirs * 1000, 1),
        }
    )
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--regenerate", action="store_true", help=f"rebuild {DATA.relative_to(ROOT)} with Faker")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--per-kind", type=int, default=300, help="positives per detector (negatives: 3x as many)"
    )
    ap.add_argument("--no-cost", action="store_true", help="precision and recall only")
    args = ap.parse_args()
    if args.regenerate or not DATA.exists():
        samples = generate(args.seed, args.per_kind)
        DATA.parent.mkdir(parents=True, exist_ok=True)
        DATA.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))
    samples = load_set()
    for line in quality(samples):
        print(json.dumps(line, ensure_ascii=False), flush=True)
    if not args.no_cost:
        for line in cost(samples):
            print(json.dumps(line, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
