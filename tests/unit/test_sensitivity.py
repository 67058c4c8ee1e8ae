"""The sensitivity rule as a contract: every leaf of the body is scanned, header values are gathered across
repeats and lists, any sensitive signal wins, and whatever cannot be judged within the budget is sensitive."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llmfleet.gateway.sensitivity import (
    DETECTORS,
    MAX_CANDIDATES,
    WHY_SCAN_LIMIT,
    Classifier,
    card_in,
    leaves,
    normalise,
)
from tests.strategies import COMPLETION, SENSITIVE_VALUES, request_with_sensitive_value

ALL = sorted(DETECTORS)


def general_by_default() -> Classifier:
    return Classifier(ALL, default="general")


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(request_with_sensitive_value())
def test_a_sensitive_value_in_any_field_of_any_openai_request_makes_it_sensitive(
    case: tuple[dict, str],
) -> None:
    body, value = case
    verdict = general_by_default().classify([b"general"], body)
    assert verdict.sensitive, (value, body)


@pytest.mark.parametrize("value", SENSITIVE_VALUES)
def test_every_catalogued_value_is_found_alone(value: str) -> None:
    assert general_by_default().detect(value) is not None


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("mail ｊｏｈｎ＠ｅｘａｍｐｌｅ．ｃｏｍ", "email"),
        ("jo\u200bhn@exa\u200bmple.com", "email"),
        ("card ４１１１ １１１１ １１１１ １１１１", "credit-card"),
        ("card 4111\u00a01111\u00a01111\u00a01111", "credit-card"),
        ("card 4111  1111  1111  1111", "credit-card"),
        ("card 4111.1111.1111.1111", "credit-card"),
        ("card 4111\u200b1111\u200b1111\u200b1111", "credit-card"),
        ("card \u0664\u0661\u0661\u0661 1111 1111 1111", "credit-card"),  # Arabic-Indic digits
        ("SSN 123456789", "ssn"),
        ("social security number: 123 45 6789", "ssn"),
        ("sk_live_51Habcdefghij0123456789", "secret"),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ", "secret"),
        ("ASIAIOSFODNN7EXAMPLE", "secret"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "secret"),
        ("AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI", "secret"),
        ("-----BEGIN PGP PRIVATE KEY BLOCK-----", "secret"),
        (
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THs",
            "secret",
        ),
        ("hello world", None),
        ("tokenizer = AutoTokenizer.from_pretrained('gpt2')", None),
        ("max_tokens: 1024", None),
        ("call +1 415 555 0132", None),
        ("order 12345678 shipped on 2024-05-01", None),
        ("the SSN format is XXX-XX-XXXX", None),
        ("an ISBN 978-3-16-148410-0", None),
    ],
)
def test_detector_gaps_from_the_attack_are_closed(text: str, kind: str | None) -> None:
    assert general_by_default().detect(text) == kind


@given(
    st.lists(st.sampled_from([b"general", b"GENERAL", b"public", b" general ", b""]), min_size=1, max_size=4),
    st.lists(
        st.sampled_from([b"sensitive", b"private", b"confidential", b"internal", b"x", b"generall"]),
        min_size=1,
        max_size=3,
    ),
    st.booleans(),
    st.randoms(),
)
def test_any_non_general_header_value_wins_over_general_ones(
    general: list[bytes], other: list[bytes], joined: bool, rnd
) -> None:
    values = general + other
    rnd.shuffle(values)
    fields = [b", ".join(values)] if joined else values
    assert Classifier([], default="general").classify(fields, "hi").sensitive


def test_only_general_words_make_a_request_general_by_header() -> None:
    c = Classifier([], default="sensitive")
    assert not c.classify([b"general"], "hi").sensitive
    assert not c.classify([b"general, public", b"General"], "hi").sensitive
    assert c.classify([], "hi").sensitive
    assert c.classify([b""], "hi").sensitive  # an empty value says nothing: the default holds


def test_a_key_pinned_to_sensitive_stays_sensitive_whatever_the_header_says() -> None:
    c = Classifier(ALL, default="general", key_policy={"team-a": "sensitive"})
    assert c.classify([b"general"], {"prompt": "hello"}, "team-a") == (True, "key-policy")
    assert c.classify([b"general"], {"prompt": "hello"}, "team-b") == (False, "header")


def test_a_body_over_the_scan_limit_is_sensitive() -> None:
    c = Classifier(ALL, default="general", max_scan_bytes=4096)
    assert c.classify([b"general"], {"prompt": "a" * 5000}) == (True, WHY_SCAN_LIMIT)
    assert c.classify([b"general"], {"prompt": ["a" * 2000, "b" * 2000, "c" * 200]}) == (True, WHY_SCAN_LIMIT)
    assert not c.classify([b"general"], {"prompt": "a" * 4000}).sensitive


@pytest.mark.parametrize(
    "adversarial",
    [
        "1 " * 200_000,  # one long run of digit groups
        "4111 " * 100_000,
        "123-45-6789 " * 5_000,  # more candidates than the budget: none of them valid
    ],
)
def test_inputs_that_make_too_much_work_are_sensitive_not_slow(adversarial: str) -> None:
    c = Classifier(ALL, default="general", max_scan_bytes=4 << 20)
    verdict = c.classify([b"general"], {"prompt": "000-00-0000 " * (MAX_CANDIDATES + 1) + adversarial})
    assert verdict == (True, WHY_SCAN_LIMIT)


@pytest.mark.parametrize("adversarial", ["a" * 100_000 + "@", "@a" * 50_000, "x@y." * 25_000, "sk" * 50_000])
def test_long_runs_next_to_at_signs_get_a_verdict(adversarial: str) -> None:
    assert general_by_default().classify([b"general"], {"prompt": adversarial}).why in (
        "header",
        "detector:email",
        "detector:secret",
    )


def test_leaves_are_every_string_key_and_number_at_any_depth() -> None:
    deep: object = "bottom"
    for _ in range(5000):  # deeper than Python's recursion limit
        deep = [deep]
    body = {"a": ["x", {"b": 1, "c": 2.5, "d": None, "e": True}], "deep": deep}
    assert leaves(body) == ["a", "x", "b", "1", "c", "2.5", "d", "e", "deep", "bottom"]


def test_normalise_folds_width_and_removes_format_characters() -> None:
    assert normalise("ｊｏｈｎ＠ｅｘａｍｐｌｅ．ｃｏｍ") == "john@example.com"
    assert normalise("a\u200bb\u200dc\ufeffd\u00ade") == "abcde"
    assert normalise("plain ascii") == "plain ascii"


@settings(max_examples=300)
@example("4111 1111 1111 1111")
@given(st.lists(st.text("0123456789", min_size=1, max_size=6), min_size=1, max_size=40).map(" ".join))
def test_card_in_equals_the_definition(run: str) -> None:
    """Whole groups of 13-19 digits that pass Luhn and start with an issuer's digit, by brute force."""
    from llmfleet.gateway.sensitivity import CARD_FIRST_DIGITS, luhn_ok

    groups = run.split()
    expected = any(
        13 <= len("".join(groups[i:j])) <= 19
        and luhn_ok("".join(groups[i:j]))
        and (groups[i][0] in CARD_FIRST_DIGITS or groups[i].startswith("1800"))
        for i in range(len(groups))
        for j in range(i + 1, len(groups) + 1)
    )
    assert card_in(run) == expected


@settings(max_examples=100, deadline=None)
@given(COMPLETION)
def test_requests_without_sensitive_values_follow_the_header(body: dict) -> None:
    """No false alarm from the request's own structure: random completions are general when labelled so,
    unless their random text happens to hold a detectable value."""
    c = general_by_default()
    verdict = c.classify([b"general"], body)
    assert verdict.sensitive == (c.detect("\n".join(leaves(body))) is not None)
