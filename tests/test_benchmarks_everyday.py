"""``benchmarks/everyday.py``: which processes it runs where, its tables, the weighing of a
checkpoint, and a smoke run (nothing here asserts a speed)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from .conftest import REPO, load_benchmark


@pytest.fixture(scope="module")
def everyday():
    return load_benchmark(REPO / "benchmarks" / "everyday.py")


def test_commands_alternate_over_both_checkouts_with_their_pythonpath(
    everyday, tmp_path, monkeypatch
):
    calls = []
    seconds = {"this": iter([3.0, 1.0, 2.0]), "baseline": iter([4.0, 4.0, 5.0])}

    def fake_run(cmd, checkout):
        label = "this" if checkout == REPO else "baseline"
        env = everyday.checkout_env(checkout)
        calls.append((cmd[-1], label, env["PYTHONPATH"]))
        return next(seconds[label])

    monkeypatch.setattr(everyday, "timed_run", fake_run)
    checkouts = {"this": REPO, "baseline": tmp_path}
    args = argparse.Namespace(runs=3, warmup=0)
    rows = everyday.time_commands(checkouts, ['python -c "import medvision"'], args)
    # each run measures both checkouts back to back, the order rotating
    order = ["this", "baseline", "baseline", "this", "this", "baseline"]
    assert [label for _, label, _ in calls] == order
    assert {(label, path) for _, label, path in calls} == {
        ("this", str(REPO)),
        ("baseline", str(tmp_path)),
    }
    assert all(cmd == "import medvision" for cmd, _, _ in calls)
    this, baseline = rows
    assert (this["median"], this["min"], this["max"]) == (2.0, 1.0, 3.0)
    assert (baseline["median"], baseline["min"], baseline["max"]) == (4.0, 4.0, 5.0)
    assert this["vs_baseline"] == 0.5 and "vs_baseline" not in baseline
    table = everyday.TIMES.markdown(rows).splitlines()
    assert table[2] == '| python -c "import medvision" | this | 2.00 | 1.00 | 3.00 | 0.500 |'
    assert table[3] == '| python -c "import medvision" | baseline | 4.00 | 4.00 | 5.00 | - |'


def test_tensor_bytes_counts_the_state_dict_only(everyday, tmp_path: Path):
    import torch

    path = tmp_path / "x.ckpt"
    state = {"w": torch.zeros(10), "b": torch.zeros(4, dtype=torch.float16), "n": torch.tensor(3)}
    optimizer = {"exp_avg": torch.zeros(1000)}  # in the file, not among the weights
    torch.save({"state_dict": state, "optimizer_states": [optimizer], "epoch": 0}, path)
    assert everyday.tensor_bytes(path) == 10 * 4 + 4 * 2 + 8
    assert path.stat().st_size > 4000  # the optimizer state is in the file


def test_options_and_refusals(everyday):
    args = everyday.build_parser().parse_args(["--commands", "import,help", "--runs", "2"])
    assert args.commands == ["import", "help"] and args.runs == 2
    with pytest.raises(SystemExit):
        everyday.build_parser().parse_args(["--commands", "predict"])
    with pytest.raises(SystemExit, match="not a medvision checkout"):
        everyday.main(["--baseline", str(REPO / "docs"), "--no-checkpoint"])


def test_smoke_run_of_one_import_per_checkout(everyday, capsys):
    everyday.main(
        ["--runs", "1", "--warmup", "0", "--commands", "import", "--no-checkpoint"]
        + ["--baseline", str(REPO)]
    )
    out = capsys.readouterr().out
    assert "Machine: " in out and "Checkouts: this: commit " in out
    assert "; baseline: commit " in out  # checkouts named by commit, not by this machine's path
    rows = [line for line in out.splitlines() if line.startswith('| python -c "import')]
    assert [row.split("|")[2].strip() for row in rows] == ["this", "baseline"]
    assert float(rows[0].split("|")[6]) > 0  # a ratio of two measured times


@pytest.mark.slow
def test_quickstart_checkpoints_are_weighed(everyday, tmp_path: Path):
    rows = everyday.checkpoint_rows("this", REPO, tmp_path)
    assert [row["file"] for row in rows] == ["best.ckpt", "last.ckpt"]
    for row in rows:
        # the file holds the weights and more (optimizer state, hyperparameters)
        assert row["size_mb"] > row["tensors_mb"] > 1 and row["ratio"] > 1
    assert rows[0]["tensors_mb"] == rows[1]["tensors_mb"]  # the same network
