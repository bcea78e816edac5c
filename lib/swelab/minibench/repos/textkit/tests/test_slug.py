from textkit import slug_path, slugify


def test_basic():
    assert slugify("Hello World") == "hello-world"


def test_punctuation_dropped():
    assert slugify("What's new in 2024?") == "whats-new-in-2024"


def test_accents_removed():
    assert slugify("Crème Brûlée") == "creme-brulee"


def test_keep_unicode():
    assert slugify("Crème Brûlée", ascii_only=False) == "crème-brûlée"


def test_collapses_separators():
    assert slugify("  a -- b __ c  ") == "a-b-c"


def test_max_length_cuts_at_word_boundary():
    assert slugify("the quick brown fox", max_length=12) == "the-quick"


def test_empty_separator_rejected():
    import pytest

    with pytest.raises(ValueError):
        slugify("x", separator="")


def test_slug_path():
    assert slug_path("My Blog", "", "Hello World") == "my-blog/hello-world"
