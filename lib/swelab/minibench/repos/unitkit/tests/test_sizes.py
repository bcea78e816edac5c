import pytest

from unitkit import format_size, parse_size


def test_format_bytes():
    assert format_size(0) == "0 B"
    assert format_size(512) == "512 B"


def test_format_kib():
    assert format_size(1536) == "1.5 KiB"


def test_format_gib():
    assert format_size(3 * 1024**3) == "3.0 GiB"


def test_format_precision():
    assert format_size(1536, precision=2) == "1.50 KiB"


def test_format_negative():
    with pytest.raises(ValueError):
        format_size(-1)


def test_parse_size():
    assert parse_size("1.5 KiB") == 1536
    assert parse_size("10 mib") == 10 * 1024**2
    assert parse_size("512") == 512


def test_parse_size_unknown_unit():
    with pytest.raises(ValueError):
        parse_size("3 parsecs")
