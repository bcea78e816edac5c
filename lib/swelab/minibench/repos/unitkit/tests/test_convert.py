import pytest

from unitkit import IncompatibleUnitsError, UnknownUnitError, convert, convert_text


def test_convert_length():
    assert convert(1, "mi", "m") == pytest.approx(1609.344)
    assert convert(2500, "m", "km") == pytest.approx(2.5)


def test_convert_mass():
    assert convert(1, "kg", "lb") == pytest.approx(2.20462, rel=1e-5)


def test_convert_incompatible():
    with pytest.raises(IncompatibleUnitsError):
        convert(1, "kg", "m")


def test_convert_unknown():
    with pytest.raises(UnknownUnitError):
        convert(1, "parsec", "m")


def test_convert_text():
    assert convert_text("90 min", "h") == pytest.approx(1.5)
    assert convert_text("10 km", "mi", ndigits=2) == 6.21
