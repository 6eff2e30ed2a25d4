"""Smoke test of ``benchmarks/throughput.py``: tiny arms in-process, the table and its ratios."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from .conftest import REPO, load_benchmark


@pytest.fixture(scope="module")
def throughput():
    return load_benchmark(REPO / "benchmarks" / "throughput.py")


def tiny_args(throughput, argv: list[str]):
    return throughput.resolve(throughput.build_parser().parse_args(argv))


def test_arms_table_and_ratio(throughput, lung_dir: Path, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setattr(throughput, "UNET_ENCODER", "resnet18")  # quicker, same code
    args = tiny_args(
        throughput,
        ["--device", "cpu", "--models", "unet", "--layouts", "nchw", "--data", "memory,cached"]
        + ["--image-size", "32", "--batch-size", "2", "--warmup", "0", "--steps", "1"]
        + ["--num-workers", "0", "--data-dir", str(lung_dir), "--augmentation", "none"],
    )
    matrix = throughput.arms(args)
    assert [(arm.loop, arm.data) for arm in matrix] == [
        ("medvision", "memory"),
        ("plain", "memory"),
        ("medvision", "cached"),
        ("plain", "cached"),
    ]
    results = {}
    for arm in matrix[:2]:  # the memory arms; the loader is checked on its own below
        results[arm] = [throughput.run_arm(arm, throughput.arm_spec(arm, args, tmp_path))]
    for result, *_ in results.values():
        assert result["train"]["images_per_s"] > 0 and result["peak_mb"] > 0
        assert 0 <= result["train"]["data_wait"] < 0.5 and result["infer"]["images_per_s"] > 0
    # a cached arm without a plain partner: no ratio, no inference
    results[matrix[2]] = [{"train": {"images_per_s": 1.0, "data_wait": 0.25}, "peak_mb": 9.0}]

    throughput.print_header(args, "Data: test")
    table = throughput.print_table(results, args)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("reduced for CPU: U-Net 32x32 (full 256), U-Net batch 2 (full 64)")
    assert lines[1].startswith("Machine: ") and lines[1].endswith("device used: cpu")
    header = next(line for line in lines if line.startswith("| model |"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    rows = [line for line in lines if line.startswith("| U-Net |")]
    cells = [
        dict(zip(columns, (c.strip() for c in row.strip("|").split("|")), strict=True))
        for row in rows
    ]
    assert [(c["loop"], c["data"]) for c in cells] == [
        ("medvision", "memory"),
        ("plain", "memory"),
        ("medvision", "cached"),
    ]
    memory = results[matrix[0]][0]["train"]["images_per_s"]
    plain = results[matrix[1]][0]["train"]["images_per_s"]
    assert float(cells[0]["train vs plain"]) == pytest.approx(memory / plain, abs=6e-4)
    assert float(cells[0]["infer vs plain"]) > 0
    assert cells[1]["train vs plain"] == "-"  # the plain arm itself
    assert cells[2]["train vs plain"] == "-"  # no plain cached arm ran
    assert cells[2]["infer img/s"] == "-"  # inference runs on memory batches only
    assert cells[2]["data wait %"] == "25.0"
    assert float(cells[0]["setup s"]) >= 0 and cells[0]["arm s"] == "-"  # arm s: child process
    assert "NVML util %" not in columns  # a CPU run
    assert table[0]["train_vs_plain"] == pytest.approx(memory / plain)
    assert all(row["error"] is None for row in table)


def test_failed_and_stopped_arms_show_in_the_table(throughput, capsys):
    args = tiny_args(throughput, ["--device", "cpu", "--models", "unet", "--data", "memory"])
    spec = {"arm": {"model": "unet"}}
    # the child cannot start in time
    stopped = throughput.run_arm_child(throughput.__file__, spec, timeout=0.01, keep_going=True)
    assert stopped["error"] == "stopped after 0 s (--arm-timeout)" and stopped["arm_s"] > 0
    medvision, plain = throughput.arms(args)[:2]
    results = {medvision: [stopped], plain: [{"train": {"images_per_s": 2.0}, "peak_mb": 1.0}]}
    rows = throughput.print_table(results, args)
    out = capsys.readouterr().out
    assert rows[0]["train_images_per_s"] is None and rows[0]["train_vs_plain"] is None
    assert "U-Net medvision memory: stopped after 0 s (--arm-timeout)" in out


def test_timed_batches_restart_the_lung_loader(throughput, lung_dir: Path):
    args = tiny_args(
        throughput,
        ["--device", "cpu", "--image-size", "32", "--batch-size", "8", "--num-workers", "0"]
        + ["--data-dir", str(lung_dir)],
    )
    arm = throughput.Arm("unet", "32", "nchw", "plain", "cached")
    spec = throughput.arm_spec(arm, args, lung_dir)
    loader = throughput.lung_loader(spec, cache=True)
    assert len(loader.dataset) == 16  # 80% of the 20 slices: 2 batches of 8
    batches = throughput.TimedBatches(loader, 5)  # past the end of the loader: restarted
    sizes = [len(batch["image"]) for batch in batches]
    assert sizes == [8, 8, 8, 8, 8]
    assert len(batches.waits) == 5
    begin, end = batches.waits[0][0], batches.waits[-1][0] + 1
    assert batches.wait_between(begin, end) == pytest.approx(sum(w for _, w in batches.waits))
    assert batches.wait_between(end, end + 1) == 0


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_step_timer_window_holds_the_timed_steps_and_their_loading(throughput):
    clock = FakeClock()

    def slow_batches():  # 2 batches of 4 images, each taking 1 s to load
        for _ in range(2):
            clock.now += 1.0
            yield {"image": torch.zeros(4, 1, 2, 2)}

    class Source:
        def __iter__(self):
            return slow_batches()

    # the third batch restarts the source
    batches = throughput.TimedBatches(Source(), 4, clock=clock)
    timer = throughput.StepTimer("cpu", warmup=1, steps=3, clock=clock)
    for batch in batches:
        timer.start(len(batch["image"]))
        clock.now += 3.0  # the step
        timer.end()
    assert timer.done
    result = timer.result(batches)
    # the window: the loading and the steps of batches 1-3 (3 x 1 s + 3 x 3 s), 12 images
    assert result == {"images_per_s": 1.0, "wall_s": 12.0, "data_wait": 0.25, "warmup_steps": 1}
    assert len(batches.waits) == 4


def test_warmup_time_box_ends_the_warmup_early(throughput):
    clock = FakeClock()
    timer = throughput.StepTimer("cpu", warmup=5, steps=2, warmup_seconds=5.0, clock=clock)
    steps = 0
    while not timer.done:
        timer.start(4)
        clock.now += 3.0  # each step 3 s: the box of 5 s closes after the second step
        timer.end()
        steps += 1
    assert steps == 4  # 2 warm-up steps (not 5), then the 2 timed ones
    assert timer.result(None) == {"images_per_s": 8 / 6, "wall_s": 6.0, "warmup_steps": 2}
    unfinished = throughput.StepTimer("cpu", warmup=1, steps=2, clock=clock)
    with pytest.raises(RuntimeError, match="did not close"):
        unfinished.result(None)


def test_first_line_names_what_was_reduced(throughput, monkeypatch):
    args = tiny_args(throughput, ["--device", "cpu"])
    assert throughput.size_line(args) == (
        "reduced for CPU: U-Net 64x64 (full 256), ResNet-50 64x64 (full 224), U-Net batch 8 "
        "(full 64), ResNet-50 batch 8 (full 256), 6 timed steps (full 50)"
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the GPU defaults
    args = tiny_args(throughput, ["--device", "cuda"])
    assert args.precisions == ["32", "bf16-mixed"]
    assert throughput.size_line(args) == (
        "full size: U-Net 256x256 batch 64, ResNet-50 224x224 batch 256"
    )
    args = tiny_args(throughput, ["--device", "cuda", "--batch-size", "32"])
    assert throughput.size_line(args) == (
        "reduced: U-Net batch 32 (full 64), ResNet-50 batch 32 (full 256)"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_refuses_cuda_without_gpu(throughput):
    args = throughput.build_parser().parse_args(["--device", "cuda"])
    with pytest.raises(SystemExit, match="no CUDA GPU is visible"):
        throughput.resolve(args)


def test_rejects_unknown_arm_values(throughput, capsys):
    with pytest.raises(SystemExit):
        throughput.build_parser().parse_args(["--precisions", "fp8"])
    assert "--precisions: ['fp8'] not among 32, bf16-mixed, 16-mixed" in capsys.readouterr().err
