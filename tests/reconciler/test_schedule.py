"""reconciler_cron_expression in whereabouts' dialect: parsing and next run times."""

from __future__ import annotations

import datetime as dt

import pytest

from whereabouts_py.errors import ConfigError
from whereabouts_py.reconciler.schedule import parse_cron

T0 = dt.datetime(2026, 11, 28, 3, 25, 10)  # a Saturday


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("30 4 * * *", dt.datetime(2026, 11, 28, 4, 30)),  # whereabouts' default
        ("*/15 * * * *", dt.datetime(2026, 11, 28, 3, 30)),
        ("* * * * *", dt.datetime(2026, 11, 28, 3, 26)),
        ("0 0 1 1 *", dt.datetime(2027, 1, 1, 0, 0)),
        ("@hourly", dt.datetime(2026, 11, 28, 4, 0)),
        ("@weekly", dt.datetime(2026, 11, 29, 0, 0)),  # next Sunday
        ("0 9 * * mon-fri", dt.datetime(2026, 11, 30, 9, 0)),
        ("0 12 * dec *", dt.datetime(2026, 12, 1, 12, 0)),
        ("5,35 3 * * *", dt.datetime(2026, 11, 28, 3, 35)),
        ("0 0 29 2 *", dt.datetime(2028, 2, 29, 0, 0)),
        ("0 0 13 * 5", dt.datetime(2026, 12, 4, 0, 0)),  # either the 13th or a Friday
    ],
)
def test_next_run(expression: str, expected: dt.datetime) -> None:
    assert parse_cron(expression).next_after(T0) == expected


def test_seconds_until_next() -> None:
    assert parse_cron("*/5 * * * *").seconds_until_next(T0) == 4 * 60 + 50


@pytest.mark.parametrize(
    "expression",
    ["", "* * * *", "61 * * * *", "* 25 * * *", "*/0 * * * *", "5-1 * * * *", "x * * * *"],
)
def test_malformed_expressions_name_the_key(expression: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_cron(expression)
    assert raised.value.key == "reconciler_cron_expression"


def test_impossible_date_is_an_error() -> None:
    with pytest.raises(ConfigError):
        parse_cron("0 0 31 2 *").next_after(T0)


# whereabouts reads the expression with robfig/cron's standard parser, in UTC.
@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("30 4 * * ?", dt.datetime(2026, 11, 28, 4, 30)),
        ("0 0 ? * mon", dt.datetime(2026, 11, 30, 0, 0)),
        ("@daily", dt.datetime(2026, 11, 29, 0, 0)),
        ("@midnight", dt.datetime(2026, 11, 29, 0, 0)),
        ("@monthly", dt.datetime(2026, 12, 1, 0, 0)),
        ("@yearly", dt.datetime(2027, 1, 1, 0, 0)),
        ("@every 10m", dt.datetime(2026, 11, 28, 3, 35, 10)),
        ("@every 1h30m", dt.datetime(2026, 11, 28, 4, 55, 10)),
        ("@every 1.5h", dt.datetime(2026, 11, 28, 4, 55, 10)),
        ("@every 500ms", dt.datetime(2026, 11, 28, 3, 25, 11)),  # at least a second
        # One day field starred: the other decides alone (both must match).
        ("0 0 13 * *", dt.datetime(2026, 12, 13, 0, 0)),
        ("0 0 * * 5", dt.datetime(2026, 12, 4, 0, 0)),
        # A stepped star is a restriction: either day field may match.
        ("0 0 */10 * 1", dt.datetime(2026, 11, 30, 0, 0)),
        ("CRON_TZ=Asia/Tokyo 30 4 * * *", dt.datetime(2026, 11, 28, 19, 30)),
    ],
)
def test_whereabouts_dialect(expression: str, expected: dt.datetime) -> None:
    assert parse_cron(expression).next_after(T0) == expected


def test_schedule_runs_in_utc_whatever_the_local_zone() -> None:
    aware = dt.datetime(2026, 11, 28, 3, 25, 10, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    # 03:25 at UTC-5 is 08:25 UTC: the next 04:30 UTC is the next day's.
    assert parse_cron("30 4 * * *").next_after(aware) == dt.datetime(
        2026, 11, 29, 4, 30, tzinfo=dt.UTC
    )


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("@every", "@every needs a duration"),
        ("@every 10 minutes", "@every needs a duration"),
        ("@fortnightly", "unknown descriptor '@fortnightly'"),
        ("TZ=Mars/Olympus 0 * * * *", "unknown time zone 'Mars/Olympus'"),
        ("0 0 5-1 * *", "runs backwards"),
        ("* * * * * *", "needs 5 fields, found 6"),
    ],
)
def test_refusals_name_the_key_and_say_why(expression: str, says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_cron(expression)
    assert raised.value.key == "reconciler_cron_expression"
    assert says in str(raised.value)
