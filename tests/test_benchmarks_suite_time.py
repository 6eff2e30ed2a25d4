"""``benchmarks/suite_time.py``: the counts it reads off pytest, the runs it makes in which
checkout, and its table (nothing here asserts a speed)."""

from __future__ import annotations

import pytest

from .conftest import REPO, load_benchmark


@pytest.fixture(scope="module")
def suite_time():
    return load_benchmark(REPO / "benchmarks" / "suite_time.py")


@pytest.mark.parametrize(
    ("summary", "expected"),
    [
        ("== 3 passed, 1 skipped in 9.10s ==", (3, 1, 0, 0)),
        ("1 failed, 782 passed, 7 skipped, 2 errors in 325.69s (0:05:25)", (782, 7, 1, 2)),
        ("12 passed, 1 error in 3.2s", (12, 0, 0, 1)),
    ],
)
def test_counts_come_from_the_last_summary_line(suite_time, summary, expected):
    output = f"....s\n5 passed in 1.0s (an earlier line)\n{summary}\n"
    assert tuple(suite_time.counts(output).values()) == expected


def test_a_run_without_a_summary_line_stops_the_script(suite_time):
    with pytest.raises(SystemExit, match="no summary line"):
        suite_time.counts("ImportError while loading conftest")


def test_a_checkout_s_own_tests_run_in_it_and_are_counted(suite_time, tmp_path):
    (tmp_path / "medvision").mkdir()
    (tmp_path / "medvision" / "__init__.py").write_text("WHERE = 'the fake checkout'\n")
    (tmp_path / "tests").mkdir()
    test = "import medvision, pytest\n\ndef test_here():\n    assert medvision.WHERE\n\n"
    test += "def test_fails():\n    assert False\n\n@pytest.mark.skip\ndef test_skipped():\n"
    (tmp_path / "tests" / "test_fake.py").write_text(test + "    pass\n")
    assert suite_time.test_files(tmp_path) == {"tests/test_fake.py"}
    row = suite_time.timed_pytest(tmp_path, ["tests/test_fake.py", "-p", "no:xdist"])
    assert (row["passed"], row["failed"], row["skipped"], row["errors"]) == (1, 1, 1, 0)
    assert row["wall_min"] > 0 and row["cpu_min"] > 0
