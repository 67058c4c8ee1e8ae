"""The commit-message rule (hack/commit_msg.py, the commit-msg hook) on good and bad messages."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import hack_script

commit_msg = hack_script("commit_msg")


def test_a_good_message_passes() -> None:
    assert commit_msg.problems("gateway: keep TTFT under load\n\nWhy, and the figures: 4.2x floor.\n") == []
    assert commit_msg.problems("Merge branch 'x'\n") == []


def test_each_rule_names_what_is_wrong() -> None:
    long = "gateway: " + "x" * 70
    assert any("72" in p for p in commit_msg.problems(long + "\n\nbody\n"))
    assert any("prefix" in p for p in commit_msg.problems("Fix the thing\n\nbody\n"))
    assert any("blank line" in p for p in commit_msg.problems("gateway: fix\nbody right under\n"))
    assert any("blank line" in p for p in commit_msg.problems("gateway: fix\n"))
    assert commit_msg.problems("\n# only comments\n") == ["the message is empty"]


@given(subject=st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=120))
def test_subjects_over_72_characters_never_pass(subject: str) -> None:
    found = commit_msg.problems(f"gateway: {subject}\n\nbody\n")
    assert (len(f"gateway: {subject}") > 72) == any("at most 72" in p for p in found)
