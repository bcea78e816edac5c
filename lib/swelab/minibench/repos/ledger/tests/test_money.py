from decimal import Decimal

import pytest

from ledger import InvalidAmountError, format_cents, to_cents


def test_to_cents_plain():
    assert to_cents("12.34") == 1234


def test_to_cents_thousands_separator():
    assert to_cents("1,234.5") == 123450


def test_to_cents_int_and_decimal():
    assert to_cents(7) == 700
    assert to_cents(Decimal("0.1")) == 10


def test_to_cents_negative():
    assert to_cents("-3.10") == -310


def test_to_cents_rejects_garbage():
    with pytest.raises(InvalidAmountError):
        to_cents("twelve")


def test_to_cents_rejects_infinity():
    with pytest.raises(InvalidAmountError):
        to_cents("Infinity")


def test_format_cents():
    assert format_cents(123456) == "$1,234.56"
    assert format_cents(-5) == "-$0.05"
    assert format_cents(0, symbol="€") == "€0.00"
