"""When the reconciler sweeps: ``reconciler_cron_expression`` in whereabouts' dialect.

whereabouts reads the expression with robfig/cron's standard parser and runs
it in UTC, so the same is accepted here: five fields (minute, hour, day of
month, month, day of week) with ``*``, ``?`` (the same as ``*``), lists,
ranges, steps and month or weekday names; the descriptors ``@yearly``,
``@annually``, ``@monthly``, ``@weekly``, ``@daily``, ``@midnight``,
``@hourly`` and ``@every <duration>`` (Go's duration syntax: ``10m``,
``1h30m``, ``1.5h``); and a leading ``CRON_TZ=<zone>`` or ``TZ=<zone>``.
Times are computed by croniter; the few places where robfig and croniter
differ are settled here:

* the two day fields: when either contains a plain ``*`` or ``?``, a day must
  match both (that is, the other one); when both are restricted, a day
  matching either runs (``*/2`` counts as restricted);
* a range that runs backwards (``5-1``) is refused;
* ``@every`` below one second means every second, and whole seconds count.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from dataclasses import dataclass

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from whereabouts_py.errors import ConfigError

KEY = "reconciler_cron_expression"

_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")
# Go's time.ParseDuration: an optional sign, then numbers with units.
_GO_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_RANGE = re.compile(r"^([0-9a-zA-Z]+)-([0-9a-zA-Z]+)$")


@dataclass(frozen=True)
class CronSchedule:
    """A parsed expression: either cron fields or a constant ``@every`` delay."""

    expression: str
    fields: str | None = None
    every_s: int | None = None
    zone: dt.tzinfo = dt.UTC
    day_or: bool = True

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """The first run strictly after ``moment``.

        A naive ``moment`` is read as UTC and the answer is naive UTC too; an
        aware one gets an aware answer in UTC.
        """
        naive = moment.tzinfo is None
        start = (moment.replace(tzinfo=dt.UTC) if naive else moment).astimezone(self.zone)
        if self.every_s is not None:
            upcoming = start.replace(microsecond=0) + dt.timedelta(seconds=self.every_s)
        else:
            assert self.fields is not None
            try:
                upcoming = croniter(self.fields, start, day_or=self.day_or).get_next(dt.datetime)
            except CroniterBadDateError:
                raise ConfigError(KEY, self.expression, "never runs (no such date)") from None
        in_utc = upcoming.astimezone(dt.UTC)
        return in_utc.replace(tzinfo=None) if naive else in_utc

    def seconds_until_next(self, moment: dt.datetime) -> float:
        return (self.next_after(moment) - moment).total_seconds()


def parse_cron(expression: object) -> CronSchedule:
    """A schedule from an expression; ConfigError naming the key and value when malformed."""
    if not isinstance(expression, str) or not expression.strip():
        raise ConfigError(KEY, expression, "must be a cron expression like '30 4 * * *'")
    text = expression.strip()
    zone: dt.tzinfo = dt.UTC
    if text.startswith(("CRON_TZ=", "TZ=")):
        prefix, _, text = text.partition(" ")
        zone = _zone(expression, prefix.partition("=")[2])
        text = text.strip()
    if text.startswith("@every"):
        return CronSchedule(expression, every_s=_every(expression, text), zone=zone)
    if text.startswith("@"):
        if text not in _DESCRIPTORS:
            known = ", ".join([*_DESCRIPTORS, "@every <duration>"])
            raise ConfigError(KEY, expression, f"unknown descriptor {text!r} (known: {known})")
        text = _DESCRIPTORS[text]
    parts = text.split()
    if len(parts) != 5:
        raise ConfigError(KEY, expression, f"needs 5 fields, found {len(parts)}")
    parts = ["*" if part == "?" else part.replace("?", "*") for part in parts]
    for name, part in zip(_FIELD_NAMES, parts, strict=True):
        _refuse_backwards(expression, name, part)
    fields = " ".join(parts)
    try:
        croniter(fields, dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    except CroniterBadCronError as error:
        raise ConfigError(KEY, expression, str(error)) from None
    starred = [any(item == "*" for item in part.split(",")) for part in (parts[2], parts[4])]
    return CronSchedule(expression, fields=fields, zone=zone, day_or=not any(starred))


def _refuse_backwards(expression: str, name: str, part: str) -> None:
    for item in part.split(","):
        bounds = _RANGE.match(item.partition("/")[0])
        if bounds and all(value.isdigit() for value in bounds.groups()):
            first, last = (int(value) for value in bounds.groups())
            if first > last:
                raise ConfigError(KEY, expression, f"{name} field: range {item!r} runs backwards")


def _every(expression: str, text: str) -> int:
    duration = text[len("@every") :].strip()
    body = duration.lstrip("+-")
    seconds = 0.0
    position = 0
    while position < len(body):
        match = _GO_DURATION.match(body, position)
        if match is None or match.group(1) in ("", "."):
            break
        seconds += float(match.group(1)) * _GO_UNITS[match.group(2)]
        position = match.end()
    if (not body or position != len(body)) and body != "0":
        raise ConfigError(
            KEY, expression, f"@every needs a duration such as 10m or 1h30m, not {duration!r}"
        )
    if duration.startswith("-"):
        seconds = -seconds
    return max(int(seconds), 1)


def _zone(expression: str, name: str) -> dt.tzinfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(KEY, expression, f"unknown time zone {name!r}") from None
