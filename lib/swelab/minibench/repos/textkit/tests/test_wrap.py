import pytest

from textkit import truncate, wrap


def test_truncate_short_text_unchanged():
    assert truncate("hello", 10) == "hello"


def test_truncate_exact_width_unchanged():
    assert truncate("hello", 5) == "hello"


def test_truncate_drops_space_before_suffix():
    assert truncate("hello world", 8, suffix="...") == "hello..."


def test_truncate_width_smaller_than_suffix():
    with pytest.raises(ValueError):
        truncate("hello", 2, suffix="...")


def test_wrap_greedy():
    assert wrap("one two three four", 9) == ["one two", "three", "four"]


def test_wrap_long_word_alone():
    assert wrap("a extraordinarily b", 5) == ["a", "extraordinarily", "b"]


def test_wrap_empty():
    assert wrap("   ", 10) == []


def test_wrap_rejects_zero_width():
    with pytest.raises(ValueError):
        wrap("x", 0)
