"""reconciler_cron_expression: parsing and next run times (pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from whereabouts_py.core.schedule import parse_cron
from whereabouts_py.errors import ConfigError

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
