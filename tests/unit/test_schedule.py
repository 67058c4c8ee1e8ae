"""Scheduled replica bounds (spec.autoscaling.schedules): when a window is open, in its own time zone, and what
the autoscaler does with it. Pure: every instant is passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmfleet.api.load import SpecError, parse_spec
from llmfleet.api.v1alpha1 import WEEKDAYS, AutoscalingSpec, Schedule
from llmfleet.autoscale.policy import Observation, ScaleState, decide
from llmfleet.fleet.schedule import is_open, scheduled

BERLIN = ZoneInfo("Europe/Berlin")


def window(**kw: object) -> Schedule:
    return Schedule.model_validate({"name": "w", "start": "08:00", "end": "18:00", "minReplicas": 4, **kw})


def at(*args: int, tz: ZoneInfo = BERLIN) -> datetime:
    return datetime(*args, tzinfo=tz)  # type: ignore[misc]


def test_a_weekday_window_opens_and_closes_on_local_time() -> None:
    s = window(timeZone="Europe/Berlin", days=["Mon", "Tue", "Wed", "Thu", "Fri"])
    assert not is_open(s, at(2026, 12, 7, 7, 59))  # Monday 07:59 Berlin
    assert is_open(s, at(2026, 12, 7, 8, 0))
    assert is_open(s, at(2026, 12, 7, 17, 59))
    assert not is_open(s, at(2026, 12, 7, 18, 0))  # end is exclusive
    assert not is_open(s, at(2026, 12, 5, 12, 0))  # Saturday
    # The same instant in UTC: 07:30 UTC is 08:30 in Berlin in winter.
    assert is_open(s, datetime(2026, 12, 7, 7, 30, tzinfo=UTC))


def test_daylight_saving_time_moves_the_window_in_utc_not_on_the_wall_clock() -> None:
    s = window(timeZone="Europe/Berlin")
    # EU summer time starts on 2026-03-29: 08:00 Berlin is 07:00 UTC before, 06:00 UTC after.
    assert is_open(s, datetime(2026, 3, 28, 7, 0, tzinfo=UTC)) and not is_open(
        s, datetime(2026, 3, 28, 6, 30, tzinfo=UTC)
    )
    assert is_open(s, datetime(2026, 3, 30, 6, 0, tzinfo=UTC)) and not is_open(
        s, datetime(2026, 3, 30, 5, 30, tzinfo=UTC)
    )


def test_a_window_past_midnight_belongs_to_the_day_it_starts() -> None:
    s = window(start="22:00", end="06:00", days=["Fri"], timeZone="UTC", minReplicas=None, maxReplicas=1)
    assert is_open(s, at(2026, 12, 4, 22, 0, tz=UTC))  # Friday night
    assert is_open(s, at(2026, 12, 5, 5, 59, tz=UTC))  # Saturday morning, opened on Friday
    assert not is_open(s, at(2026, 12, 5, 6, 0, tz=UTC))
    assert not is_open(s, at(2026, 12, 5, 23, 0, tz=UTC))  # Saturday night: Saturday is not a day of it
    assert not is_open(s, at(2026, 12, 4, 5, 0, tz=UTC))  # Friday morning: Thursday did not open it
    whole_day = window(start="00:00", end="24:00", timeZone="UTC", days=["Sun"])
    assert is_open(whole_day, at(2026, 12, 6, 23, 59, tz=UTC)) and not is_open(
        whole_day, at(2026, 12, 7, 0, 0, tz=UTC)
    )


def _minute_of_week(local: datetime) -> int:
    return local.weekday() * 1440 + local.hour * 60 + local.minute


@settings(max_examples=300)
@given(
    days=st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True),
    start=st.integers(0, 1439),
    end=st.integers(1, 1440),
    zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]),
    instant=st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
    ),
)
def test_is_open_agrees_with_minutes_of_the_week(days, start, end, zone, instant) -> None:
    s = window(
        days=days,
        start=f"{start // 60:02d}:{start % 60:02d}",
        end=f"{end // 60:02d}:{end % 60:02d}",
        timeZone=zone,
    )
    length = end - start if end > start else end + 1440 - start
    m = _minute_of_week(instant.astimezone(ZoneInfo(zone)))
    expected = any((m - (WEEKDAYS.index(d) * 1440 + start)) % 10080 < length for d in days)
    assert is_open(s, instant) == expected


def spec(**kw: object) -> AutoscalingSpec:
    return AutoscalingSpec.model_validate({"minReplicas": 1, "maxReplicas": 8, "loadMemory": "0s", **kw})


def test_overlapping_windows_take_the_highest_bounds_and_a_window_wins_over_the_cr() -> None:
    noon = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    a = {"name": "a", "start": "08:00", "end": "18:00", "minReplicas": 3}
    b = {"name": "b", "start": "11:00", "end": "13:00", "minReplicas": 5, "maxReplicas": 6}
    eff, names = scheduled(spec(schedules=[a, b]), noon)
    assert (eff.min_replicas, eff.max_replicas, names) == (5, 6, ("a", "b"))
    eff, _ = scheduled(spec(schedules=[{**a, "minReplicas": 20}]), noon)
    assert (eff.min_replicas, eff.max_replicas) == (20, 20)  # the window's minimum raises the CR's maximum
    eff, _ = scheduled(spec(minReplicas=3, schedules=[{**a, "minReplicas": None, "maxReplicas": 0}]), noon)
    assert (eff.min_replicas, eff.max_replicas) == (0, 0)  # a night at zero under a CR minimum of 3
    eff, names = scheduled(spec(schedules=[a]), noon + timedelta(hours=8))
    assert (eff.min_replicas, eff.max_replicas, names) == (1, 8, ())


@given(
    windows=st.lists(
        st.tuples(st.one_of(st.none(), st.integers(0, 30)), st.one_of(st.none(), st.integers(0, 30))).filter(
            lambda t: t != (None, None) and (t[0] is None or t[1] is None or t[0] <= t[1])
        ),
        max_size=4,
    ),
    lo=st.integers(0, 10),
    extra=st.integers(0, 10),
)
def test_the_bounds_in_force_are_always_a_range(windows, lo, extra) -> None:
    s = spec(
        minReplicas=lo,
        maxReplicas=lo + extra,
        schedules=[
            {"name": f"w{i}", "start": "00:00", "end": "24:00", "minReplicas": mn, "maxReplicas": mx}
            for i, (mn, mx) in enumerate(windows)
        ],
    )
    eff, names = scheduled(s, datetime(2026, 12, 7, 12, tzinfo=UTC))
    assert eff.min_replicas <= eff.max_replicas
    assert len(names) == len(windows)
    mins = [mn for mn, _ in windows if mn is not None]
    maxes = [mx for _, mx in windows if mx is not None]
    if mins and not maxes:
        assert eff.min_replicas == max(mins)
    if maxes and not mins:
        assert eff.max_replicas == max(maxes)


def test_the_autoscaler_meets_a_scheduled_peak_before_it_arrives_and_lets_go_after() -> None:
    s = spec(
        scaleDownWindow="1m",
        schedules=[
            {
                "name": "office-hours",
                "timeZone": "Europe/Berlin",
                "days": ["Mon"],
                "start": "08:00",
                "end": "18:00",
                "minReplicas": 6,
            }
        ],
    )
    calm = Observation(waiting=0, running=1, ready=2, ttft_p95=0.1, kv_usage=0.05)
    state = ScaleState(target=2)
    before = at(2026, 12, 7, 7, 59)
    d = decide(s, state, calm, before)
    assert d.target == 2
    d = decide(s, d.state, None, at(2026, 12, 7, 8, 0))  # no metrics at all: the window still applies
    assert d.target == 6 and "schedule office-hours" in d.reason
    t, state = at(2026, 12, 7, 18, 0), d.state
    targets = []
    for i in range(12):
        d = decide(s, state, calm, t + timedelta(seconds=15 * i))
        state = d.state
        targets.append(d.target)
    assert targets[-1] < 6  # closed: the load decides again, through the usual scale-down window


@pytest.mark.parametrize(
    ("schedule", "field", "words"),
    [
        ({"timeZone": "Mars/Olympus"}, "schedules[0].timeZone", "unknown time zone"),
        ({"start": "8:00"}, "schedules[0].start", "pattern"),
        ({"start": "24:00"}, "schedules[0].start", "pattern"),
        ({"end": "25:00"}, "schedules[0].end", "pattern"),
        ({"days": ["Monday"]}, "schedules[0].days[0]", "Mon"),
        ({"minReplicas": 5, "maxReplicas": 2}, "schedules[0]", "minReplicas (5) must be <= maxReplicas (2)"),
        ({"minReplicas": None}, "schedules[0]", "sets minReplicas, maxReplicas or both"),
    ],
)
def test_a_bad_schedule_names_its_field(schedule, field, words) -> None:
    s = {"name": "w", "start": "08:00", "end": "18:00", "minReplicas": 2, **schedule}
    s = {k: v for k, v in s.items() if v is not None}
    with pytest.raises(SpecError) as e:
        parse_spec(
            {"model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct"}, "autoscaling": {"schedules": [s]}}
        )
    assert f"spec.autoscaling.{field}" in str(e.value) and words in str(e.value)


def test_schedule_names_are_unique() -> None:
    w = {"name": "w", "start": "08:00", "end": "18:00", "minReplicas": 2}
    with pytest.raises(SpecError, match="'w' is used twice"):
        parse_spec(
            {"model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct"}, "autoscaling": {"schedules": [w, w]}}
        )
