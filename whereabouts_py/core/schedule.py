"""Cron schedules, for ``reconciler_cron_expression`` (pure: times in, times out).

The whereabouts flat file may set ``reconciler_cron_expression`` (its
default there is ``30 4 * * *``). Accepted: five fields (minute, hour, day of
month, month, day of week) each ``*``, a number, a range ``a-b``, a list
``a,b``, and steps ``*/n`` or ``a-b/n``; month and weekday names (``jan``,
``mon``); and the macros ``@yearly``, ``@annually``, ``@monthly``,
``@weekly``, ``@daily``, ``@midnight``, ``@hourly``. As in classic cron, when
both day fields are restricted a day matching either one runs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from whereabouts_py.errors import ConfigError

KEY = "reconciler_cron_expression"

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (name, lowest, highest, names for values starting at lowest)
_FIELDS: tuple[tuple[str, int, int, list[str] | None], ...] = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_SEARCH_LIMIT = dt.timedelta(days=366 * 5)


@dataclass(frozen=True)
class CronSchedule:
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    def _day_matches(self, moment: dt.datetime) -> bool:
        day_ok = moment.day in self.days
        weekday_ok = (moment.isoweekday() % 7) in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return weekday_ok
        if self.any_weekday:
            return day_ok
        return day_ok or weekday_ok

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """The first scheduled minute strictly after ``moment``."""
        candidate = moment.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        limit = moment + _SEARCH_LIMIT
        while candidate <= limit:
            if candidate.month not in self.months:
                year, month = candidate.year + candidate.month // 12, candidate.month % 12 + 1
                candidate = candidate.replace(year=year, month=month, day=1, hour=0, minute=0)
                continue
            if not self._day_matches(candidate):
                candidate = (candidate + dt.timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if candidate.hour not in self.hours:
                candidate = (candidate + dt.timedelta(hours=1)).replace(minute=0)
                continue
            if candidate.minute not in self.minutes:
                candidate += dt.timedelta(minutes=1)
                continue
            return candidate
        raise ConfigError(KEY, self.expression, "never runs (no such date)")

    def seconds_until_next(self, moment: dt.datetime) -> float:
        return (self.next_after(moment) - moment).total_seconds()


_Field = tuple[str, int, int, list[str] | None]


def _value(text: str, spec: _Field, expr: str) -> int:
    name, low, high, names = spec
    lowered = text.lower()
    if names is not None and lowered in names:
        return names.index(lowered) + low
    if not text.isdigit():
        raise ConfigError(KEY, expr, f"{name} field: {text!r} is not a number")
    value = int(text)
    if not low <= value <= high:
        raise ConfigError(KEY, expr, f"{name} field: {value} is outside {low}-{high}")
    return value


def _field(text: str, spec: _Field, expr: str) -> set[int]:
    name, low, high, _names = spec
    values: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ConfigError(KEY, expr, f"{name} field: bad step {step_text!r}")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start = _value(first, spec, expr)
            end = _value(last, spec, expr)
            if start > end:
                raise ConfigError(KEY, expr, f"{name} field: range {base} is backwards")
        else:
            start = _value(base, spec, expr)
            end = high if slash else start
        values.update(range(start, end + 1, step))
    return values


def parse_cron(expression: str) -> CronSchedule:
    """A schedule from a cron expression; ConfigError naming the key when malformed."""
    if not isinstance(expression, str) or not expression.strip():
        raise ConfigError(KEY, expression, "must be a cron expression like '30 4 * * *'")
    text = _MACROS.get(expression.strip().lower(), expression)
    parts = text.split()
    if len(parts) != 5:
        raise ConfigError(KEY, expression, f"needs 5 fields, found {len(parts)}")
    fields = [_field(part, spec, expression) for part, spec in zip(parts, _FIELDS, strict=True)]
    weekdays = {day % 7 for day in fields[4]}  # 7 is Sunday too
    return CronSchedule(
        expression=expression,
        minutes=frozenset(fields[0]),
        hours=frozenset(fields[1]),
        days=frozenset(fields[2]),
        months=frozenset(fields[3]),
        weekdays=frozenset(weekdays),
        any_day=parts[2] == "*",
        any_weekday=parts[4] == "*",
    )
