from ledger import Ledger


def test_balance():
    ledger = Ledger()
    ledger.add("salary", 250000)
    ledger.add("rent", -120000)
    assert ledger.balance() == 130000


def test_debit_is_tagged():
    ledger = Ledger()
    entry = ledger.add("rent", -120000, tags=["home"])
    assert entry.tags == ("home", "debit")


def test_entries_by_tag():
    ledger = Ledger()
    ledger.add("coffee", -350, tags=["food"])
    ledger.add("book", -1200, tags=["fun"])
    assert [entry.description for entry in ledger.entries("food")] == ["coffee"]


def test_totals_by_tag():
    ledger = Ledger()
    ledger.add("coffee", -350, tags=["food"])
    ledger.add("refund", 100, tags=["food"])
    assert ledger.totals_by_tag() == {"food": -250, "debit": -350}
