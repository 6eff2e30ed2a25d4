"""``benchmarks/step_overhead.py``: its window, its summary and a minimal run of two arms."""

from __future__ import annotations

import re

import pytest

from .conftest import REPO, load_benchmark

LINE = re.compile(
    r"^step overhead: medvision (?P<mine>[\d.]+) ms/step vs plain (?P<plain>[\d.]+) ms/step: "
    r"(?P<overhead>[+-]\d+) us/step, throughput ratio (?P<ratio>[\d.]+) "
    r"\((meets|below) the target >= 0.95; median of (?P<rounds>\d+) rounds\)$",
    re.M,
)


@pytest.fixture(scope="module")
def bench():
    return load_benchmark(REPO / "benchmarks" / "step_overhead.py")


def test_window_holds_whole_steps_after_warmup(bench):
    wall, cpu = iter([10.0, 10.5]), iter([3.0, 3.2])  # read at the start of steps 1 and 3
    clocks = {"clock": lambda: next(wall), "cpu_clock": lambda: next(cpu)}
    window = bench.Window(warmup=1, steps=2, device="cpu", **clocks)
    assert [window.at_step_start(i) for i in range(4)] == [False, False, False, True]
    assert window.ms_per_step() == pytest.approx({"wall": 250.0, "cpu": 100.0})
    with pytest.raises(RuntimeError, match="fewer than 3 steps"):
        bench.Window(warmup=1, steps=2, device="cpu").ms_per_step()


def test_summary_and_the_step_overhead_line(bench):
    rounds = [
        {"medvision": 10.0, "bare": 9.0, "plain": 8.0},
        {"medvision": 12.0, "bare": 9.5, "plain": 10.0},
    ]
    summary = bench.summarize(rounds)
    # per round: ratios 8/10 = 0.8 and 10/12; overheads 2 ms both
    assert summary["medvision"] == pytest.approx(
        {"ms": 11.0, "overhead_us": 2000.0, "ratio": (0.8 + 10 / 12) / 2}
    )
    assert summary["bare"]["overhead_us"] == pytest.approx(250.0)  # median of 1000 and -500
    text = bench.report(rounds)
    # bare's ratios 8/9 and 10/9.5: median 0.971
    assert "| bare | NonFiniteGuard and progress bar | 9.25 | +250 | 0.971 |" in text
    found = LINE.search(text)
    assert found and found["mine"] == "11.00" and found["plain"] == "9.00"
    assert (found["overhead"], found["ratio"], found["rounds"]) == ("+2000", "0.817", "2")
    assert "below the target" in found[0]
    assert "step overhead:" not in bench.report([{"medvision": 1.0, "bare": 1.0}])


def test_batches_cycle_and_hold_every_class(bench):
    batches = bench.make_batches(2, 5, 16, "cpu")
    assert batches[0]["image"].shape == (5, 1, 16, 16)
    assert batches[0]["label"].tolist() == [0, 1, 2, 3, 0]
    served = list(bench.TimedBatches(batches, 3))
    assert served[2] is batches[0] and len(bench.TimedBatches(batches, 3)) == 3


@pytest.mark.slow
def test_minimal_run_prints_the_step_overhead_line(bench, capsys):
    bench.main(
        ["--arms", "medvision,plain", "--rounds", "1", "--warmup", "1", "--steps", "1"]
        + ["--batch-size", "4", "--image-size", "16", "--distinct-batches", "1"]
    )
    out = capsys.readouterr().out  # after the progress bar's lines (Lightning's go to stdout)
    machine = next(line for line in out.splitlines() if line.startswith("Machine: "))
    assert machine.endswith("device used: cpu")
    found = LINE.search(out)
    assert found, out
    assert float(found["mine"]) > 0 and float(found["plain"]) > 0 and found["rounds"] == "1"
    ratio = float(found["plain"]) / float(found["mine"])
    assert float(found["ratio"]) == pytest.approx(ratio, abs=2e-3)
    assert "clock: CPU time of this process" in out
    assert "For comparison, wall time (median ms/step): medvision " in out


def test_cpu_clock_is_refused_on_the_gpu(bench):
    with pytest.raises(SystemExit, match="--clock cpu"):
        bench.main(["--device", "cuda", "--clock", "cpu"])
