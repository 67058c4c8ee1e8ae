"""Scheduled replica bounds, pure: which of ``spec.autoscaling.schedules`` are open at an instant, and the
autoscaling spec with their minReplicas/maxReplicas in force.

A window opens at ``start`` local time (in its ``timeZone``, daylight-saving time included: the wall clock is
what users schedule by) on each of its ``days`` and closes at ``end``; an ``end`` at or before ``start`` closes
the next day, so a night window is one schedule. Where windows overlap, the highest minReplicas and the
highest maxReplicas of the open ones apply; a schedule's figure wins over the CR's own bounds when the two
conflict (a window's minReplicas above the CR's maxReplicas raises the maximum, and a window's maxReplicas
below the CR's minReplicas lowers the minimum), since the schedule is the more specific statement.
The clock is the caller's (``decide``'s ``now``), so the operator and the fleet simulator agree.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from llmfleet.api.v1alpha1 import WEEKDAYS, AutoscalingSpec, Schedule


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def is_open(schedule: Schedule, now: datetime) -> bool:
    """Whether the window is open at ``now`` (an aware datetime)."""
    local = now.astimezone(_zone(schedule.time_zone))
    minute = local.hour * 60 + local.minute
    start, end = _minutes(schedule.start), _minutes(schedule.end)
    today = WEEKDAYS[local.weekday()]
    yesterday = WEEKDAYS[(local - timedelta(days=1)).weekday()]
    if end > start:
        return today in schedule.days and start <= minute < end
    # Past midnight: open from start today, or until end if it opened yesterday.
    return (today in schedule.days and minute >= start) or (yesterday in schedule.days and minute < end)


def open_schedules(spec: AutoscalingSpec, now: datetime) -> tuple[Schedule, ...]:
    return tuple(s for s in spec.schedules if is_open(s, now))


def scheduled(spec: AutoscalingSpec, now: datetime) -> tuple[AutoscalingSpec, tuple[str, ...]]:
    """The spec with the open windows' bounds in force, and the names of those windows (empty: the CR's own)."""
    opened = open_schedules(spec, now)
    if not opened:
        return spec, ()
    mins = [s.min_replicas for s in opened if s.min_replicas is not None]
    maxes = [s.max_replicas for s in opened if s.max_replicas is not None]
    lo = max(mins) if mins else spec.min_replicas
    hi = max(maxes) if maxes else spec.max_replicas
    if lo > hi:
        if mins and not maxes:
            hi = lo  # the window's minimum over the CR's maximum: the window wins
        else:
            lo = hi  # a window's maximum under the (CR's or another window's) minimum
    return spec.model_copy(update={"min_replicas": lo, "max_replicas": hi}), tuple(s.name for s in opened)
