from datetime import date

import pytest

from unitkit import add_months, days_in_month, is_leap_year, parse_date


def test_leap_years():
    assert is_leap_year(2024)
    assert not is_leap_year(1900)
    assert is_leap_year(2000)


def test_days_in_month():
    assert days_in_month(2023, 2) == 28
    assert days_in_month(2024, 2) == 29
    assert days_in_month(2024, 4) == 30


def test_add_months_simple():
    assert add_months(date(2024, 1, 15), 1) == date(2024, 2, 15)


def test_add_months_across_year():
    assert add_months(date(2023, 11, 3), 3) == date(2024, 2, 3)
    assert add_months(date(2024, 1, 10), -2) == date(2023, 11, 10)


def test_parse_date():
    assert parse_date("2024-03-09") == date(2024, 3, 9)
    assert parse_date("2024-3-9") == date(2024, 3, 9)


def test_parse_date_rejects_bad_day():
    with pytest.raises(ValueError):
        parse_date("2023-02-29")
