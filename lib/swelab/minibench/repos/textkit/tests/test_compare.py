from textkit import equals_ignore_case, unique_words


def test_equal_ascii():
    assert equals_ignore_case("Hello", "hELLO")


def test_not_equal():
    assert not equals_ignore_case("hello", "help")


def test_combining_accents():
    assert equals_ignore_case("Résumé", "RE\u0301SUME\u0301")


def test_unique_words_keeps_first_spelling():
    assert unique_words(["Apple", "banana", "APPLE", "Banana", "cherry"]) == ["Apple", "banana", "cherry"]
