import pytest

from ledger import InsufficientStockError, InvalidAmountError, Inventory, UnknownItemError


def test_add_and_remove():
    inventory = Inventory()
    inventory.add("apple", 5)
    assert inventory.remove("apple", 3) == 2
    assert inventory.quantity("apple") == 2


def test_remove_too_many_leaves_stock():
    inventory = Inventory()
    inventory.add("apple", 2)
    with pytest.raises(InsufficientStockError):
        inventory.remove("apple", 3)
    assert inventory.quantity("apple") == 2


def test_quantity_unknown():
    with pytest.raises(UnknownItemError):
        Inventory().quantity("pear")


def test_rejects_non_positive_quantity():
    inventory = Inventory()
    with pytest.raises(InvalidAmountError):
        inventory.add("apple", 0)


def test_skus_sorted():
    inventory = Inventory()
    inventory.add("pear", 1)
    inventory.add("apple", 1)
    assert inventory.skus() == ["apple", "pear"]
