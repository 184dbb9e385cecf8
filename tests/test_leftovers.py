"""What a user's machine keeps after the demo and the examples (nothing), and the pandas extra's error."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

import sqlsecure
from sqlsecure.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_demo_without_a_directory_leaves_nothing_in_the_temp_folder(tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # the process's temp folder, listed before and after
    before = sorted(os.listdir(scratch))
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 0, result.output
    assert "demo federation: " + str(scratch) in result.output  # it did run in the temp folder
    assert sorted(os.listdir(scratch)) == before == []


def test_an_example_without_a_directory_leaves_nothing_in_the_temp_folder(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "python_app.py")], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stderr
    assert "revenue" in done.stdout
    assert os.listdir(scratch) == []


def test_no_test_or_example_makes_a_temp_folder_it_does_not_remove():
    """mkdtemp is allowed only beside an rmtree of the same folder (the throwaway database servers)."""
    offenders = []
    for path in [*ROOT.glob("tests/*.py"), *ROOT.glob("examples/*.py"), *ROOT.glob("sqlsecure/**/*.py")]:
        text = path.read_text(encoding="utf-8")
        if "mkdtemp(" in text and "rmtree(" not in text and path.name != "test_leftovers.py":
            offenders.append(path.name)
    assert offenders == []


def test_fetchdf_without_pandas_names_the_extra(federation_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with sqlsecure.connect(federation_dir / "federation.toml", party="bank") as con:
        cur = con.execute("SELECT COUNT(*) AS n FROM bank.customers")
        with pytest.raises(sqlsecure.InterfaceError, match=r"pip install 'sqlsecure\[pandas\]'"):
            cur.fetchdf()
