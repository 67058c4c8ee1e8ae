"""The detectors' precision and recall on the committed labelled set (bench/data/detectors.jsonl, built with
Faker by bench/detectors.py): a quality floor, so that a pattern change that misses values or flags
look-alikes fails here, not in production."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import detectors  # noqa: E402

# Recall is what fail-closed routing rests on; precision is what keeps general traffic general.
FLOORS = {"email": (0.99, 0.99), "credit-card": (0.99, 0.95), "ssn": (0.99, 0.95), "secret": (0.99, 0.97)}


@pytest.fixture(scope="module")
def quality() -> dict[str, dict]:
    return {line["detector"]: line for line in detectors.quality(detectors.load_set())}


@pytest.mark.parametrize("kind", sorted(FLOORS))
def test_detector_meets_its_recall_and_precision_floor(quality: dict[str, dict], kind: str) -> None:
    recall_floor, precision_floor = FLOORS[kind]
    q = quality[kind]
    assert q["positives"] >= 100
    assert q["recall"] >= recall_floor, q["false_negative_examples"]
    assert q["precision"] >= precision_floor, q["false_positive_examples"]
