"""``benchmarks/harness/``: what every benchmark script is built on."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from .conftest import REPO, load_benchmark

SCRIPTS = sorted(p for p in (REPO / "benchmarks").glob("*.py") if not p.name.startswith("_"))
MODULES = ("arms", "cli", "machine", "plain", "runs", "tables", "timing")


@pytest.fixture(scope="module")
def common():
    """Every public name of the harness's modules, as one namespace."""
    saved = list(sys.path)
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        modules = [importlib.import_module(f"harness.{name}") for name in MODULES]
    finally:
        sys.path[:] = saved
    names = {k: v for m in modules for k, v in vars(m).items() if not k.startswith("_")}
    return SimpleNamespace(**names)


def test_load_benchmark_finds_the_harness_and_restores_sys_path():
    before = list(sys.path)
    module = load_benchmark(REPO / "benchmarks" / "data_cache.py")
    assert sys.path == before
    assert module.machine_line.__module__ == "harness.machine"


def test_no_script_reaches_a_sibling_through_sys_path():
    for script in SCRIPTS:
        text = script.read_text()
        assert "sys.path.insert(0, str(Path(__file__)" not in text, script.name


@pytest.mark.slow
def test_every_script_prints_its_help():
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    for script in SCRIPTS:
        proc = subprocess.run(
            [sys.executable, str(script), "--help"], capture_output=True, text=True, env=env
        )
        assert proc.returncode == 0 and "usage:" in proc.stdout, (script.name, proc.stderr[-800:])


def test_machine_line_names_cores_torch_and_gpu(common):
    import torch

    line = common.machine_line()
    assert "usable cores" in line and f"torch {torch.__version__}" in line
    assert ("no GPU" in line) == (not torch.cuda.is_available())


def test_write_marked_replaces_between_markers_and_appends(common, tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("# Page\n\nbefore\n<!-- a -->\nold\n<!-- /a -->\nafter\n")
    common.write_marked(page, "<!-- a -->", "<!-- /a -->", "new")
    assert page.read_text() == "# Page\n\nbefore\n<!-- a -->\n\nnew\n\n<!-- /a -->\nafter\n"
    common.write_marked(page, "<!-- b -->", "<!-- /b -->", "more")
    assert page.read_text().endswith("after\n\n<!-- b -->\n\nmore\n\n<!-- /b -->\n")
    with pytest.raises(SystemExit, match="has no <!-- c --> marker"):
        common.write_marked(page, "<!-- c -->", "<!-- /c -->", "x", append=False)
    fresh = tmp_path / "new.md"
    common.write_marked(fresh, "<!-- a -->", "<!-- /a -->", "t", title="Title")
    assert fresh.read_text() == "# Title\n\n<!-- a -->\n\nt\n\n<!-- /a -->\n"


def test_best_row_and_read_csv_rows(common, tmp_path: Path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,val/loss,train/loss\n0,0.9,\n0,,1.5\n1,0.7,\n2,0.8,\n")
    rows = common.read_csv_rows(path)
    assert len(rows) == 4 and rows[1]["val/loss"] == ""
    assert common.best_row(rows, "val/loss", "min")["epoch"] == "1"
    assert common.best_row(rows, "val/loss", "max")["epoch"] == "0"
    with pytest.raises(ValueError, match="no val/dice"):
        common.best_row(rows, "val/dice")
    with pytest.raises(SystemExit, match="missing.csv is missing"):
        common.read_csv_rows(tmp_path / "missing.csv")


def test_mean_after_first(common):
    assert common.mean_after_first([10.0, 2.0, 4.0]) == 3.0
    assert common.mean_after_first([5.0]) == 5.0


def test_linked_lung_copies_cycles_over_the_pairs(common, tmp_path: Path):
    source = tmp_path / "src"
    for sub in ("2d_images", "2d_masks"):
        (source / sub).mkdir(parents=True)
        for name in ("a.tif", "b.tif"):
            (source / sub / name).write_bytes(sub.encode() + name.encode())
    out = common.linked_lung_copies(source, tmp_path / "out", 5)
    images = sorted(p.name for p in (out / "2d_images").iterdir())
    assert images == ["c0000_a.tif", "c0000_b.tif", "c0001_a.tif", "c0001_b.tif", "c0002_a.tif"]
    assert (out / "2d_masks/c0002_a.tif").read_bytes() == b"2d_masksa.tif"


def test_child_result_reads_the_last_result_line(common):
    code = "print('RESULT {\"x\": 1}'); print('noise'); print('RESULT {\"x\": 2}')"
    assert common.child_result([sys.executable, "-c", code], "child") == {"x": 2}
    with pytest.raises(SystemExit, match="child failed"):
        common.child_result([sys.executable, "-c", "import sys; sys.exit(3)"], "child")


def test_comma_list_and_at_least(common):
    import argparse

    parse = common.comma_list(("a", "b"), "--x")
    assert parse("b, a") == ["b", "a"]
    with pytest.raises(argparse.ArgumentTypeError, match=r"--x: \['c'\] not among a, b"):
        parse("a,c")
    with pytest.raises(argparse.ArgumentTypeError, match="at least 2"):
        common.at_least(2)("1")


def test_table_cells_csv_and_columns(common, tmp_path: Path):
    table = common.Table(
        "name",
        common.Column("ratio", "value", "{:.2f}"),
        common.Column("nested", "test.f1", "{:.1f}"),
        common.Column("twice", lambda row: 2 * row["value"] if row["value"] != "n/a" else None),
    )
    rows = [
        {"name": "a", "value": 0.5, "test": {"f1": 0.25}},
        {"name": "b", "value": 0.0, "test": {}},
        {"name": "", "value": "n/a", "test": None},
    ]
    assert table.markdown(rows).splitlines() == [
        "| name | ratio | nested | twice |",
        "|---|---|---|---|",
        "| a | 0.50 | 0.2 | 1.0 |",
        "| b | 0.00 | - | 0.0 |",  # no value: "-"
        "| | n/a | - | - |",  # an empty cell stays empty, text is shown as it is
    ]
    assert table.without("nested", "twice").titles == ["name", "ratio"]
    table.without("twice").write_csv(tmp_path / "t.csv", rows[:2])
    assert (tmp_path / "t.csv").read_text().splitlines() == [
        "name,ratio,nested",
        "a,0.5,0.25",
        "b,0.0,",
    ]


def test_alternate_runs_every_arm_per_round_and_rotates(common):
    ran = []

    def measure(arm, index):
        ran.append((index, arm))
        return f"{arm}{index}"

    rounds = common.alternate(["a", "b", "c"], measure, rounds=3, rotate=True)
    assert [arm for _, arm in ran] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert rounds == [{"a": f"a{i}", "b": f"b{i}", "c": f"c{i}"} for i in range(3)]
    assert list(rounds[1]) == ["a", "b", "c"]  # the table's order, not the run order
    ran.clear()
    common.alternate(["a", "b"], measure, rounds=2)
    assert ran == [(0, "a"), (0, "b"), (1, "a"), (1, "b")]


def test_spread_and_ratio(common):
    assert common.Spread.of([3.0, None, 1.0, 2.0]) == (2.0, 1.0, 3.0)
    assert common.Spread.of([None]) is None
    assert common.ratio(3.0, 2.0) == 1.5
    assert common.ratio(None, 2.0) is None and common.ratio(1.0, 0.0) is None


def test_run_arm_child_reports_a_failed_arm(common, tmp_path: Path):
    script = tmp_path / "bench.py"
    script.write_text("import sys; sys.exit('no such arm: ' + sys.argv[2])")
    failed = common.run_arm_child(script, {"arm": "x"}, keep_going=True)
    assert failed["error"].startswith("arm x failed (exit 1)") and failed["arm_s"] > 0
    assert 'no such arm: {"arm": "x"}' in failed["error"]
    with pytest.raises(SystemExit, match="arm x failed"):
        common.run_arm_child(script, {"arm": "x"})


def test_plain_classifier_standardizes_as_medvision_does(common):
    """The plain loop's input is the same as ClassificationModule's (the same work per step)."""
    import torch

    from medvision.models.classification_net import input_stats

    for channels in (1, 3):
        model = common.classifier("resnet10t", channels, num_classes=4)
        mean, std = input_stats(model.net, channels)
        image = torch.rand(2, channels, 8, 8)
        assert torch.allclose(model.preprocess(image), (image - mean) / std)


def test_plain_unet_loss_is_medvisions_bce_dice(common):
    import torch

    from medvision.models.losses import build_loss

    model = common.unet("resnet18")
    logits = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    mask = (torch.rand(2, 1, 16, 16) > 0.5).float()
    assert torch.allclose(model.loss(logits, mask), build_loss("bce_dice", 1)(logits, mask))


def test_plain_train_step_changes_the_weights(common):
    import torch

    torch.manual_seed(0)
    model = common.classifier("resnet10t", 1, num_classes=4, class_weight=torch.ones(4))
    optimizer = torch.optim.SGD(model.net.parameters(), lr=0.1)
    batch = common.random_batches(1, 4, 1, 16, "label", num_classes=4)[0]
    assert batch["label"].tolist() == [0, 1, 2, 3]
    before = [p.detach().clone() for p in model.net.parameters()]
    model.net.train()
    loss = common.train_step(model, optimizer, batch["image"], batch["label"])
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.net.parameters(), strict=True))


def test_overrides_write_groups_epochs_and_no_progress_bar(common):
    args = common.overrides(
        "configs/x.yaml",
        3,
        data={"data_dir": Path("/d"), "image_size": [96, 128], "cache": True, "sampler": None},
        model={"model_name": "resnet18"},
        trainer={"limit_train_batches": 2},
        seed_everything=42,
    )
    assert args == [
        "--config",
        "configs/x.yaml",
        "--data.init_args.data_dir=/d",
        "--data.init_args.image_size=[96,128]",
        "--data.init_args.cache=true",
        "--model.init_args.model_name=resnet18",
        "--trainer.limit_train_batches=2",
        "--seed_everything=42",
        "--trainer.max_epochs=3",
        "--model.init_args.lr_scheduler.init_args.T_max=3",
        "--trainer.enable_progress_bar=false",
    ]


def test_fit_and_test_are_read_from_what_medvision_wrote(common, tmp_path: Path):
    run = tmp_path / "fit/version_0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints/best.ckpt").write_bytes(b"")
    (run / "metrics.csv").write_text("epoch,val/f1\n0,0.5\n1,0.75\n")
    (run / "epoch_times.json").write_text('[{"wall_s": 9.0, "cpu_s": 1}, {"wall_s": 3.0}]')
    (run / "test").mkdir()
    (run / "test/metrics.csv").write_text("epoch,test/f1,test/auroc\n0,0.7,\n0,,0.9\n")
    summary = "metric,value,ci_low,ci_high,n\nf1,0.7,0.55,0.84,110\n"
    (run / "test/test_summary.csv").write_text(summary)
    fit = common.finished_fit(tmp_path / "fit", 12.0)
    assert (fit.epoch_s, fit.fit_s, fit.best) == ([9.0, 3.0], 12.0, run / "checkpoints/best.ckpt")
    assert common.best_row(fit.metrics, "val/f1")["epoch"] == "1"
    tested = common.Tested(fit.run / "test")
    assert tested.metrics == {"f1": 0.7, "auroc": 0.9}
    assert tested.summary["f1"] == {"value": 0.7, "ci_low": 0.55, "ci_high": 0.84, "n": 110.0}
    with pytest.raises(SystemExit, match="no .*best.ckpt after fit"):
        common.finished_fit(tmp_path / "none")


def test_publish_prints_and_writes_under_the_command(common, tmp_path: Path, capsys):
    page = tmp_path / "page.md"
    page.write_text("# Page\n<!-- t -->\nold\n<!-- /t -->\n")
    common.publish("| a |", None, ("<!-- t -->", "<!-- /t -->"))
    assert page.read_text().count("old") == 1 and capsys.readouterr().out == "| a |\n"
    common.publish("| a |", page, ("<!-- t -->", "<!-- /t -->"), "python benchmarks/x.py")
    block = "<!-- t -->\n\n```\npython benchmarks/x.py\n```\n\n| a |\n\n<!-- /t -->"
    assert page.read_text() == f"# Page\n{block}\n"
