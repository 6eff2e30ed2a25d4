"""``medvision-cv --seeds``: a config repeated over seeds (with or without folds), summarized as
mean ± std, and ``medvision-report``'s pooled test-set interval beside it."""

from __future__ import annotations

import json
import logging
import statistics

import numpy as np
import pytest
import yaml
from lightning.pytorch import seed_everything
from sklearn.metrics import roc_auc_score

from medvision.cli.compare import main as report_main
from medvision.cli.crossval import cross_validate, main, seed_list
from medvision.cli.cv_summary import study_plan, summarize
from medvision.data import ChestXrayDataModule, LungCTDataModule
from medvision.data.synthetic import write_chest_xray
from medvision.evaluation.bootstrap import bootstrap_ci
from medvision.utils.files import read_csv

from .conftest import chest_run_args, config_run_args

QUICK = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.num_sanity_val_steps=0",
]

pytestmark = pytest.mark.usefixtures("one_thread")


def table_row(report: str, first_cell: str) -> list[str]:
    """The cells of the first Markdown table row that starts with ``first_cell``."""
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row {first_cell!r} in the report")


# --- what a study runs ------------------------------------------------------------------------


def test_seeds_are_a_count_or_the_seeds_themselves(tmp_path, capsys):
    assert seed_list([3]) == [0, 1, 2]
    assert seed_list([7, 11, 13]) == [7, 11, 13]
    for bad in ([0], [1, 1], [-1, 2], [3, 2**32]):
        with pytest.raises(ValueError, match="--seeds"):
            seed_list(bad)
    with pytest.raises(SystemExit):
        main(["--seeds", "2", "2", "--config", "x.yaml"])
    assert "distinct seeds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--config", "x.yaml"])
    assert "give --folds K, --seeds N, or both" in capsys.readouterr().err


def test_a_study_of_folds_and_seeds_is_every_fold_for_every_seed():
    plan = study_plan(2, [5, 9])
    assert [run.name for run in plan] == [
        "fold_0_seed_5",
        "fold_1_seed_5",
        "fold_0_seed_9",
        "fold_1_seed_9",
    ]
    assert plan[1].fit_args() == [
        "--data.init_args.num_folds=2",
        "--data.init_args.fold=1",
        "--seed_everything=5",
    ]
    assert [run.fit_args() for run in study_plan(None, [3])] == [["--seed_everything=3"]]
    assert [run.name for run in study_plan(3, None)] == ["fold_0", "fold_1", "fold_2"]
    assert [run.label for run in (plan[1], *study_plan(3, None)[:1], *study_plan(None, [3]))] == [
        "Fold 1/2, seed 5",
        "Fold 0/3",
        "Seed 3",
    ]


def test_one_run_is_no_study(tmp_path, chest_dir):
    with pytest.raises(ValueError, match="at least 2 runs"):
        cross_validate(chest_run_args(tmp_path, chest_dir), seeds=[4])


def test_summary_of_folds_and_seeds_groups_the_folds_by_seed():
    dice = {(0, 0): 0.8, (1, 0): 0.6, (0, 1): 0.9, (1, 1): 0.5, (0, 2): 0.7, (1, 2): 0.9}
    results = [
        {"run": f"fold_{f}_seed_{s}", "fold": f, "seed": s, "metrics": {"test/dice": value}}
        for (f, s), value in dice.items()
    ]
    (row,) = summarize(results)
    assert row["mean"] == pytest.approx(statistics.mean(dice.values()))
    assert row["std"] == pytest.approx(statistics.stdev(dice.values()))
    # each seed's cross-validation estimate: the mean of its two folds
    assert [row[f"cv_seed_{s}"] for s in range(3)] == pytest.approx([0.7, 0.7, 0.8])
    assert row["std_cv"] == pytest.approx(statistics.stdev([0.7, 0.7, 0.8]))
    assert row["fold_1_seed_2"] == 0.9
    assert list(row)[:7] == [
        "metric",
        "mean",
        "std",
        "cv_seed_0",
        "cv_seed_1",
        "cv_seed_2",
        "std_cv",
    ]


# --- the seed changes training randomness, never the split ------------------------------------


def test_the_weighted_sampler_draws_follow_seed_everything(chest_dir, monkeypatch):
    def draws() -> list[int]:
        dm = ChestXrayDataModule(
            chest_dir, image_size=16, sampler="weighted", num_workers=0, seed=7
        )
        dm.setup("fit")
        return list(dm.train_dataloader().sampler)

    unseeded = draws()
    assert draws() == unseeded  # the datamodule's seed alone, when the run seeds nothing
    seed_everything(0)
    first = draws()
    seed_everything(1)
    second = draws()
    seed_everything(0)
    assert draws() == first and first != second and first != unseeded


def test_the_device_augmentation_stream_follows_seed_everything(lung_dir):
    def stream_start() -> int:
        dm = LungCTDataModule(
            lung_dir, image_size=32, num_workers=0, cache=True, gpu_augmentation=True
        )
        dm.setup("fit")
        return dm.batch_augmentation.generator.initial_seed()

    unseeded = stream_start()
    assert unseeded == 42  # the datamodule's seed on rank 0, as before
    seed_everything(3)
    three = stream_start()
    seed_everything(4)
    assert len({unseeded, three, stream_start()}) == 3


# --- a seeds study of the chest X-ray classifier, and its report --------------------------------


@pytest.fixture(scope="module")
def chest_seeds(tmp_path_factory) -> dict:
    """``medvision-cv --seeds 2`` of the small chest X-ray CNN (no folds), run once."""
    base = tmp_path_factory.mktemp("chest_seeds")
    data_dir = base / "chest_xray"
    write_chest_xray(data_dir, scale=0.5, size=48, seed=0)
    args = chest_run_args(base / "runs", data_dir, *QUICK)
    output = base / "seeds"
    main(["--seeds", "2", "--output", str(output), *args])
    return {"output": output, "args": args, "base": base}


@pytest.mark.slow
def test_each_seed_is_a_run_on_the_same_split(chest_seeds, caplog):
    output = chest_seeds["output"]
    configs, per_image, logged = [], [], []
    for seed in (0, 1):
        folder = output / f"seed_{seed}"
        result = json.loads((folder / "fold_result.json").read_text())
        assert (result["run"], result["seed"], result["num_folds"]) == (f"seed_{seed}", seed, None)
        log_dir = folder / result["log_dir"]
        assert (log_dir / "checkpoints" / "best.ckpt").is_file()
        configs.append(yaml.safe_load((log_dir / "config.yaml").read_text()))
        per_image.append(read_csv(log_dir / "test_per_image.csv"))
        rows = [r for r in read_csv(log_dir / "metrics.csv") if r.get("test/f1")]
        logged.append({k: float(v) for k, v in rows[0].items() if k.startswith("test/") and v})
    assert [c["seed_everything"] for c in configs] == [0, 1]  # not the config's 42
    assert configs[0]["data"] == configs[1]["data"]  # the data seed, hence the split, is kept
    assert configs[0]["data"]["init_args"]["num_folds"] is None
    images = [[r["image"] for r in rows] for rows in per_image]
    assert images[0] == images[1] and len(images[0]) == 10  # the same test images
    probs = [[r["prob_NORMAL"] for r in rows] for rows in per_image]
    assert probs[0] != probs[1]  # another seed, another model

    summary = {r["metric"]: r for r in read_csv(output / "cv_summary.csv")}
    assert list(next(iter(summary.values()))) == ["metric", "mean", "std", "seed_0", "seed_1"]
    for metric in ("test/f1", "test/auroc", "test/loss"):
        values = [run[metric] for run in logged]
        assert float(summary[metric]["mean"]) == pytest.approx(statistics.mean(values), rel=1e-6)
        assert float(summary[metric]["std"]) == pytest.approx(statistics.stdev(values), rel=1e-6)
    assert (output / "cv_summary.md").read_text().startswith("# cnn5_chestxray: 2 seeds (0, 1)")

    before = sorted(p for p in output.rglob("*") if p.is_file())
    with caplog.at_level(logging.INFO, logger="medvision.cli.crossval"):
        main(["--seeds", "2", "--output", str(output), *chest_seeds["args"]])
    assert "Seed 0 already done" in caplog.text and "Seed 1 already done" in caplog.text
    assert sorted(p for p in output.rglob("*") if p.is_file()) == before
    with pytest.raises(ValueError, match=r"holds runs of another study \(seed_0, seed_1\)"):
        main(["--folds", "2", "--seeds", "2", "--output", str(output), *chest_seeds["args"]])
    assert not (output / "fold_0_seed_0" / "fold_result.json").exists()


def pooled_auroc_by_hand(per_image: list[list[dict]], num_samples: int):
    """The pooled AUROC of the runs' per-image CSVs: on a set of images, the mean over the runs
    of each run's one-vs-rest macro AUROC (scikit-learn), undefined without every class."""
    classes = [c[len("prob_") :] for c in per_image[0][0] if c.startswith("prob_")]
    order = [r["image"] for r in per_image[0]]
    labels = np.array([classes.index(r["label"]) for r in per_image[0]])
    probs = []
    for rows in per_image:
        by_image = {r["image"]: r for r in rows}
        probs.append(np.array([[float(by_image[i][f"prob_{c}"]) for c in classes] for i in order]))

    def auroc(run_probs, indices):
        return roc_auc_score(labels[indices], run_probs[indices], multi_class="ovr")

    def pooled(indices):
        if len(set(labels[indices])) < len(classes):
            return float("nan")
        return float(np.mean([auroc(p, indices) for p in probs]))

    values = [auroc(p, np.arange(len(order))) for p in probs]
    return values, bootstrap_ci(pooled, len(order), num_samples, 0.95, 0)


@pytest.mark.slow
def test_report_shows_the_seed_spread_and_the_pooled_interval(chest_seeds):
    output, out = chest_seeds["output"], chest_seeds["base"] / "report"
    report_main([str(output), "--output", str(out), "--bootstrap-samples", "200"])
    report = (out / "report.md").read_text()

    per_image = [
        read_csv(output / f"seed_{s}" / "version_0" / "test_per_image.csv") for s in (0, 1)
    ]
    values, (estimate, low, high) = pooled_auroc_by_hand(per_image, 200)
    summary = {r["metric"]: r for r in read_csv(output / "cv_summary.csv")}["test/auroc"]
    mean, std = float(summary["mean"]), float(summary["std"])
    assert mean == pytest.approx(statistics.mean(values), abs=1e-4)  # logged = per-image files
    assert table_row(report, "metric")[1] == "cnn5 (2 seeds)"
    assert table_row(report, "test/auroc")[1] == f"{mean:.4f} ± {std:.4f} [{low:.4f}, {high:.4f}]"
    assert table_row(report, "test/loss")[1].count("[") == 0  # no per-image loss to pool
    assert "the 95% bootstrap interval of the pooled test set" in report

    pooled = {r["metric"]: r for r in read_csv(out / "evaluation" / "run_0" / "pooled_summary.csv")}
    assert float(pooled["auroc"]["value"]) == pytest.approx(estimate, abs=1e-6)
    assert float(pooled["auroc"]["std"]) == pytest.approx(statistics.stdev(values), abs=1e-6)
    assert (pooled["auroc"]["n"], pooled["auroc"]["runs"]) == ("10", "2")


# --- folds and seeds on NIH ChestX-ray14 -------------------------------------------------------


@pytest.mark.slow
def test_folds_times_seeds_on_nih(tmp_path, nih_dir):
    args = config_run_args(
        "resnet50_nih.yaml",
        tmp_path / "runs",
        nih_dir,
        "--model.init_args.model_name=cnn5",
        *QUICK,
        image_size=32,
        batch_size=8,
    )
    output = tmp_path / "cv"
    rows = cross_validate(args, folds=2, output=output, seeds=[0, 1])

    results = {}
    for fold in (0, 1):
        for seed in (0, 1):
            name = f"fold_{fold}_seed_{seed}"
            result = json.loads((output / name / "fold_result.json").read_text())
            config = yaml.safe_load((output / name / result["log_dir"] / "config.yaml").read_text())
            init_args = config["data"]["init_args"]
            assert (init_args["num_folds"], init_args["fold"]) == (2, fold)
            assert config["seed_everything"] == seed
            results[fold, seed] = result["metrics"]["test/loss"]
    row = {r["metric"]: r for r in rows}["test/loss"]
    per_seed = [statistics.mean([results[0, s], results[1, s]]) for s in (0, 1)]
    assert row["cv_seed_0"] == pytest.approx(per_seed[0]) and row["cv_seed_1"] == pytest.approx(
        per_seed[1]
    )
    assert row["std_cv"] == pytest.approx(statistics.stdev(per_seed))
    assert row["std"] == pytest.approx(statistics.stdev(results.values()))
    markdown = (output / "cv_summary.md").read_text()
    assert markdown.startswith("# resnet50_nih: 2-fold cross-validation × 2 seeds (0, 1)")
    assert "| metric | mean ± std | cv_seed_0 | cv_seed_1 | std_cv |" in markdown
