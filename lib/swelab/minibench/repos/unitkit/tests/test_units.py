import pytest

from unitkit import UnknownUnitError, normalize_unit, parse_quantity


def test_normalize_symbol():
    assert normalize_unit("km") == "km"


def test_normalize_alias_any_case():
    assert normalize_unit("Kilometres") == "km"
    assert normalize_unit("LBS") == "lb"


def test_normalize_unknown():
    with pytest.raises(UnknownUnitError):
        normalize_unit("parsec")


def test_parse_quantity():
    assert parse_quantity("3.5 km") == (3.5, "km")
    assert parse_quantity("10kg") == (10.0, "kg")
    assert parse_quantity("2 Hours") == (2.0, "h")


def test_parse_quantity_rejects_garbage():
    with pytest.raises(ValueError):
        parse_quantity("km")
