"""Date functions, with the examples and outputs of template-functions-date."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kumo.providers.resources.templates.expressions import TemplateExpressionError
from kumo.providers.resources.templates.functions import date

from .helpers import arm


@pytest.fixture
def frozen_now(monkeypatch: pytest.MonkeyPatch) -> None:
    # the docs' sample output "varies for each deployment but will be similar to" 2019-03-05 17:53:18 UTC
    monkeypatch.setattr(date, "_now", lambda: datetime(2019, 3, 5, 17, 53, 18, 123456, tzinfo=UTC))


def test_utc_now_formats(frozen_now: None) -> None:
    assert arm("[utcNow()]") == "20190305T175318Z"
    assert arm("[utcNow('d')]") == "03/05/2019"
    assert arm("[utcNow('M d')]") == "3 5"


@pytest.mark.parametrize("pattern, expected", [
    ("u", "2019-03-05 17:53:18Z"),
    ("s", "2019-03-05T17:53:18"),
    ("o", "2019-03-05T17:53:18.1234560Z"),
    ("R", "Tue, 05 Mar 2019 17:53:18 GMT"),
    ("D", "Tuesday, 05 March 2019"),
    ("yyyy-MM-dd HH:mm", "2019-03-05 17:53"),
    ("hh:mm tt", "05:53 PM"),
    ("dddd, MMM d yy", "Tuesday, Mar 5 19"),
    ("HH:mm:ss.fff", "17:53:18.123"),
    ("'Day' dd", "Day 05"),
])
def test_utc_now_dotnet_format_strings(frozen_now: None, pattern: str, expected: str) -> None:
    quoted = pattern.replace("'", "''")
    assert arm(f"[utcNow('{quoted}')]") == expected


def test_date_time_add() -> None:
    # "When the preceding template is deployed with a base time of 2020-04-07 14:53:14Z"; the docs show the
    # outputs as PowerShell renders a date (4/7/2023 2:53:14 PM), ARM returns ISO 8601.
    base = {"baseTime": "2020-04-07 14:53:14Z"}
    assert arm("[dateTimeAdd(parameters('baseTime'), 'P3Y')]", **base) == "2023-04-07T14:53:14Z"
    assert arm("[dateTimeAdd(parameters('baseTime'), '-P9D')]", **base) == "2020-03-29T14:53:14Z"
    assert arm("[dateTimeAdd(parameters('baseTime'), 'PT1H')]", **base) == "2020-04-07T15:53:14Z"


def test_date_time_add_details(frozen_now: None) -> None:
    assert arm("[dateTimeAdd(utcNow(), 'PT1H')]") == "2019-03-05T18:53:18Z"  # utcNow's compact default format
    assert arm("[dateTimeAdd('2020-01-31T00:00:00Z', 'P1M')]") == "2020-02-29T00:00:00Z"  # end of month
    assert arm("[dateTimeAdd('2020-01-01T10:00:00+02:00', 'P1W')]") == "2020-01-08T08:00:00Z"
    assert arm("[dateTimeAdd('2020-01-01', 'PT1H30M15S', 'yyyy-MM-dd HH:mm:ss')]") == "2020-01-01 01:30:15"
    with pytest.raises(TemplateExpressionError, match="ISO 8601 duration"):
        arm("[dateTimeAdd('2020-01-01', '1 day')]")
    with pytest.raises(TemplateExpressionError, match="as a date and time"):
        arm("[dateTimeAdd('yesterday', 'P1D')]")


def test_epoch_conversions() -> None:
    assert arm("[dateTimeFromEpoch(1683040573)]") == "2023-05-02T15:16:13Z"
    assert arm("[dateTimeToEpoch('2023-05-02T15:16:13Z')]") == 1683040573
    assert arm("[dateTimeToEpoch(dateTimeAdd(dateTimeFromEpoch(1683040573), 'P1Y'))]") == 1683040573 + 366 * 86400
