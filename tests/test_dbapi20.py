"""The public DB-API compliance suite (PyPI `dbapi-compliance`, the classic dbapi20.py) against the
driver, its write tests on the issuer's own tables; it must pass at least as many tests as the
standard library's sqlite3 does."""

import io
import sqlite3
import unittest

import dbapi20
import pytest

import sqlsecure


def _suite_result(case: type) -> unittest.TestResult:
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(case)
    return unittest.TextTestRunner(stream=io.StringIO(), verbosity=0).run(suite)


def test_compliance_suite(make_federation, tmp_path):
    path = make_federation(tmp_path, parties=("bank", "shop"))

    class Sqlsecure(dbapi20.DatabaseAPI20Test):
        driver = sqlsecure
        connect_args = (str(path),)
        connect_kw_args = {"party": "bank"}
        lower_func = None  # no stored procedures: callproc raises NotSupportedError

    class Sqlite(dbapi20.DatabaseAPI20Test):
        driver = sqlite3
        connect_args = (":memory:",)
        connect_kw_args = {}
        lower_func = None

    ours, theirs = _suite_result(Sqlsecure), _suite_result(Sqlite)
    passed = ours.testsRun - len(ours.failures) - len(ours.errors)
    baseline = theirs.testsRun - len(theirs.failures) - len(theirs.errors)
    print(f"dbapi20: sqlsecure {passed}/{ours.testsRun}, sqlite3 {baseline}/{theirs.testsRun}")
    problems = "\n".join(f"{t.id()}: {trace.splitlines()[-1]}" for t, trace in ours.failures + ours.errors)
    print(problems)
    assert passed >= baseline, problems


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-s"])
