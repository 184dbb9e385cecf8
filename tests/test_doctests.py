"""Every example in a module's docstrings runs and holds: each module of the package whose source shows one
(`>>> `) is found here, so a new example cannot go unchecked."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import tomllib
from pathlib import Path

import pytest


def modules_with_examples() -> list[str]:
    """The modules of every package pyproject.toml ships whose source holds an example."""
    with open(Path(__file__).parents[1] / "pyproject.toml", "rb") as project:
        packages = tomllib.load(project)["tool"]["setuptools"]["packages"]
    found = []
    for package in packages:
        for info in pkgutil.iter_modules(importlib.import_module(package).__path__, package + "."):
            origin = importlib.util.find_spec(info.name).origin
            if not info.ispkg and origin.endswith(".py") and ">>> " in Path(origin).read_text(encoding="utf-8"):
                found.append(info.name)
    return sorted(set(found))


MODULES = modules_with_examples()


def test_the_examples_are_found():
    assert {"sqlsecure.planner.dialects.common", "sqlsecure.executors.spu.reach"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
