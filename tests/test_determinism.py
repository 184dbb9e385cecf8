"""The suite's own determinism (issue 17, CI failing by chance): property tests draw the same examples on
every run, so a failure is reproducible and a pass means the same thing each time."""

from pathlib import Path

from hypothesis import settings

TESTS = Path(__file__).parent


def test_property_tests_draw_the_same_examples_every_run():
    assert settings.default.derandomize and settings.default.database is None
    assert settings.default.deadline is None  # a deadline measures the machine's speed


def test_no_property_test_opts_out_of_derandomize():
    opted_out = [p.name for p in TESTS.glob("test_*.py")
                 if p.name != Path(__file__).name and "derandomize=False" in p.read_text()]
    assert not opted_out
