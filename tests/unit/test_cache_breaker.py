"""The Redis tier's circuit breaker (llmfleet.cache.breaker), shared by the response cache and the shared limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmfleet.cache.breaker import Breaker


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_one_failure_is_one_request_three_in_a_row_open_it() -> None:
    clock = Clock()
    b = Breaker("test", clock=clock)
    assert not b.fail() and b.closed
    b.ok()
    assert not b.fail() and not b.fail() and b.closed  # the success between reset the count
    assert b.fail() and not b.closed
    clock.t += 4.9
    assert not b.closed
    clock.t += 0.2
    assert b.closed  # half-open: one call may try
    assert b.fail() and not b.closed  # and its failure reopens at once
    clock.t += 5.1
    b.ok()  # the trial answered: closed, and the count starts again
    assert not b.fail() and not b.fail() and b.closed


def test_trip_after_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="trip_after"):
        Breaker("test", trip_after=0)


# "ok" and "fail" are calls' outcomes; a float: that many seconds pass.
EVENTS = st.lists(st.one_of(st.just("ok"), st.just("fail"), st.floats(0.0, 12.0)), max_size=60)


@given(events=EVENTS, trip_after=st.integers(1, 5))
def test_it_opens_exactly_on_a_run_of_failures_or_a_failed_trial(events, trip_after) -> None:
    """The specification, read off the history rather than a state: a failure opens the breaker when it ends a
    run of ``trip_after`` failures since the last success or opening, or when no call has succeeded since the
    breaker last opened. It is open for ``cooldown`` seconds after each opening, and callers do not call it
    while it is open (as the cache and the limiter do not)."""
    clock = Clock()
    b = Breaker("test", trip_after=trip_after, cooldown=5.0, clock=clock)
    history: list[str] = []  # "ok", "fail", "open" (a failure that opened it)
    opened_at: float | None = None
    for e in events:
        if isinstance(e, float):
            clock.t += e
            continue
        if not b.closed:
            assert opened_at is not None and clock.t < opened_at + 5.0
            continue
        if e == "ok":
            b.ok()
            history.append("ok")
            continue
        since = []
        for h in reversed(history):
            if h != "fail":
                break
            since.append(h)
        last_mark = next((h for h in reversed(history) if h in ("ok", "open")), None)
        expect = len(since) + 1 >= trip_after or last_mark == "open"
        assert b.fail() == expect
        assert b.closed == (not expect)
        if expect:
            history.append("open")
            opened_at = clock.t
        else:
            history.append("fail")
