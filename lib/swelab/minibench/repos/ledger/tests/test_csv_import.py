import pytest

from ledger import LedgerError
from ledger.csv_import import load_csv


def test_reads_descriptions_and_tags():
    ledger = load_csv("description,amount,tags\nSalary,2500.00,work\nCoffee,-3.50,food;treat\n")
    assert [entry.description for entry in ledger.entries()] == ["Salary", "Coffee"]
    assert ledger.entries()[1].tags == ("food", "treat", "debit")


def test_missing_column():
    with pytest.raises(LedgerError, match="amount"):
        load_csv("description,value\nSalary,1\n")


def test_bad_amount_names_line():
    with pytest.raises(LedgerError, match="line 3"):
        load_csv("description,amount\nSalary,1\nCoffee,abc\n")
