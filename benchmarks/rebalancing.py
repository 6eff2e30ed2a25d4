"""Class-imbalance remedies on one trained classifier: plain, weighted, sampler, feature GAN.

    python benchmarks/rebalancing.py --dataset ham10000 \
        --extractor-run runs/resnet50_ham10000_7class --seeds 0 1 2 --out /tmp/rebalancing

1. **Extractor.** ``--extractor-run`` is the run folder of a ``medvision fit`` with a
   classification config on the same data (``version_0/checkpoints/best.ckpt`` and the
   ``config.yaml`` medvision saves beside it). Its data block (folder, size, split seed and
   fractions) is reused as is, so every arm sees the extractor's own split.
2. **Arms.** ``configs/rebalance_<dataset>.yaml`` (plain cross-entropy) and the same composed
   with ``configs/rebalancing/{class_weighted,weighted_sampler,feature_gan}.yaml``: each retrains
   the extractor's head on the cached feature maps (extracted once, on first use), with
   ``--seed_everything`` (and the sampler's and GAN's seeds) set to each of ``--seeds``. The best
   checkpoint (validation balanced accuracy) is tested on the test split.
3. **Table.** Test accuracy, balanced accuracy, macro-F1 and per-class recall, mean +- std over
   seeds, with the extractor's own head as the first row. ``--write-docs`` puts it into
   ``docs/rebalancing.md`` between this dataset's markers.
4. **Diagnostics** from the runs' own logs: the extractor's checkpoint epoch and validation
   balanced accuracy, each arm's first-epoch training loss (near 0: the head has nothing left to
   learn on these features), the GAN's head accuracy on real features and its per-class
   generated/real spread ratio. ``--diagnostics-only`` reprints them for finished runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from harness.cli import script_command, script_parser
from harness.machine import REPO, machine_line
from harness.runs import read_csv_rows
from harness.tables import Column, Table, write_marked

ARMS = {
    "plain": [],
    "class_weighted": ["configs/rebalancing/class_weighted.yaml"],
    "weighted_sampler": ["configs/rebalancing/weighted_sampler.yaml"],
    "feature_gan": ["configs/rebalancing/feature_gan.yaml"],
}
ARM_TITLES = {
    "extractor": "extractor as trained (no retraining)",
    "plain": "plain cross-entropy",
    "class_weighted": "class-weighted cross-entropy",
    "weighted_sampler": "weighted sampler",
    "feature_gan": "feature GAN (real + generated)",
}
DOCS = REPO / "docs/rebalancing.md"


def extractor_files(run: Path) -> tuple[Path, Path]:
    """The extractor's best checkpoint and its saved config."""
    checkpoint = run / "version_0/checkpoints/best.ckpt"
    config = run / "version_0/config.yaml"
    for path in (checkpoint, config):
        if not path.is_file():
            sys.exit(f"{path} not found: --extractor-run must be a finished `medvision fit` run")
    return checkpoint, config


def write_extractor_data(config: Path, out: Path, num_workers: int) -> Path:
    """The extractor's data block as a YAML file that ``--data.init_args.data`` accepts."""
    data = yaml.safe_load(config.read_text())["data"]
    data["init_args"]["num_workers"] = num_workers
    if "check_images" in data["init_args"]:
        data["init_args"]["check_images"] = False  # the extractor's run decoded every image
    path = out / "extractor_data.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def arm_args(args, arm: str, seed: int, checkpoint: Path, data_yaml: Path, run_dir: Path):
    configs = [f"configs/rebalance_{args.dataset}.yaml", *ARMS[arm]]
    cli = [item for config in configs for item in ("--config", str(REPO / config))]
    cli += [
        f"--seed_everything={seed}",
        f"--data.init_args.classifier_checkpoint={checkpoint}",
        f"--data.init_args.data={data_yaml}",
        f"--data.init_args.seed={seed}",
        f"--trainer.default_root_dir={run_dir}",
        f"--trainer.logger.init_args.save_dir={run_dir}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    if args.epochs is not None:
        cli.append(f"--trainer.max_epochs={args.epochs}")
    if arm == "feature_gan":
        cli.append(f"--model.init_args.seed={seed}")
        if args.gan_epochs is not None:
            cli.append(f"--model.init_args.gan_epochs={args.gan_epochs}")
        if args.gan_width is not None:
            cli.append(f"--model.init_args.generator_width={args.gan_width}")
            cli.append(f"--model.init_args.discriminator_width={args.gan_width}")
    return cli + args.extra


def test_scores(metrics: dict, class_names: list[str]) -> dict:
    scores = {
        "accuracy": metrics["test/accuracy"],
        "balanced_accuracy": metrics["test/balanced_accuracy"],
        "macro_f1": metrics["test/f1"],
    }
    scores.update({f"recall/{name}": metrics[f"test/recall/{name}"] for name in class_names})
    return scores


def run_arm(args, arm: str, seed: int, checkpoint: Path, data_yaml: Path, out: Path) -> dict:
    from medvision.cli import MedVisionCLI

    run_dir = out / f"{arm}_seed{seed}"
    cli = MedVisionCLI(args=arm_args(args, arm, seed, checkpoint, data_yaml, run_dir), run=False)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    fit_s = time.perf_counter() - start
    metrics = cli.trainer.test(cli.model, cli.datamodule, ckpt_path="best", verbose=False)[0]
    return {**test_scores(metrics, cli.datamodule.class_names), "fit_s": fit_s}


def run_extractor_row(args, checkpoint: Path, data_yaml: Path, out: Path) -> dict:
    """The extractor's own head on the cached test features: the "before" row."""
    from medvision.cli import MedVisionCLI

    run_dir = out / "extractor_test"
    cli = MedVisionCLI(args=arm_args(args, "plain", 0, checkpoint, data_yaml, run_dir), run=False)
    metrics = cli.trainer.test(cli.model, cli.datamodule, verbose=False)[0]
    return test_scores(metrics, cli.datamodule.class_names)


def logged(run_dir: Path, key: str) -> list[tuple[int, float]]:
    """``(epoch, value)`` of every row of a run's metrics.csv that logged ``key``."""
    rows = read_csv_rows(run_dir / "version_0/metrics.csv")
    return [(int(r["epoch"]), float(r[key])) for r in rows if r.get(key)]


def extractor_line(checkpoint: Path, run: Path) -> str:
    """The extractor's epoch count and the validation scores of its checkpoint's epoch."""
    import torch

    epoch = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)["epoch"]
    balanced = dict(logged(run, "val/balanced_accuracy"))
    trained = max(epoch for epoch, _ in logged(run, "val/balanced_accuracy")) + 1
    return (
        f"extractor: {trained} epochs trained, checkpoint from epoch {epoch}, its validation "
        f"balanced accuracy {balanced[epoch]:.3f}"
    )


def diagnostics(out: Path, arms: list[str], seeds: list[int], class_names: list[str]) -> str:
    """What the runs' own logs say: how much the head had to learn, and the GAN's spread."""
    lines = []
    for arm in arms:
        runs = [out / f"{arm}_seed{seed}" for seed in seeds]
        if arm == "feature_gan":
            lines += gan_lines(runs, class_names)
            continue
        first = [logged(run, "train/loss_epoch")[0][1] for run in runs]
        lines.append(f"{arm}: training loss in the first epoch {mean_std(first)}")
    return "\n".join(lines)


def gan_lines(runs: list[Path], class_names: list[str]) -> list[str]:
    accuracy = [v for run in runs for _, v in logged(run, "train/head_real_accuracy_epoch")]
    lines = [
        "feature_gan: head accuracy on real training features per GAN epoch, all seeds: "
        + (f"{min(accuracy):.3f} to {max(accuracy):.3f}" if accuracy else "none logged")
    ]
    for name in class_names:
        ratios = [logged(run, f"gan/std_ratio/{name}") for run in runs]
        if not all(ratios):
            continue
        first = [r[0][1] for r in ratios]
        last = [r[-1][1] for r in ratios]
        lines.append(
            f"feature_gan: generated/real feature std ratio, {name}: after the first GAN epoch "
            f"{min(first):.2f}-{max(first):.2f}, after the last {min(last):.2f}-{max(last):.2f} "
            "(range over seeds)"
        )
    return lines


def mean_std(values: list[float]) -> str:
    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def table(rows: dict[str, list[dict]], class_names: list[str]) -> str:
    """Mean ± std over seeds of each arm's test scores, one row per arm."""
    columns = {"accuracy": "accuracy", "balanced accuracy": "balanced_accuracy"}
    columns |= {"macro-F1": "macro_f1", **{f"recall {c}": f"recall/{c}" for c in class_names}}
    return Table(
        Column("arm", lambda row: ARM_TITLES[row["arm"]]),
        *(
            Column(title, lambda row, k=key: mean_std([run[k] for run in row["runs"]]))
            for title, key in columns.items()
        ),
    ).markdown({"arm": arm, "runs": runs} for arm, runs in rows.items())


def write_docs(text: str, dataset: str) -> None:
    """Put ``text`` between this dataset's markers in docs/rebalancing.md (which must have them)."""
    start, end = f"<!-- rebalancing-{dataset}:start -->", f"<!-- rebalancing-{dataset}:end -->"
    write_marked(DOCS, start, end, text, append=False)


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (``main`` parses ``sys.argv`` with it)."""
    parser = script_parser(__doc__)
    parser.add_argument("--dataset", choices=["ham10000", "chestxray"], required=True)
    parser.add_argument("--extractor-run", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--epochs", type=int, help="trainer.max_epochs (default: the config's)")
    parser.add_argument("--gan-epochs", type=int, help="the GAN arm's gan_epochs")
    parser.add_argument("--gan-width", type=int, help="the GAN arm's generator/discriminator width")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument(
        "--diagnostics-only",
        action="store_true",
        help="print only the training diagnostics of finished runs in --out (no training)",
    )
    parser.add_argument("extra", nargs="*", help="more CLI overrides for every arm, after --")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    logging.basicConfig(level=logging.WARNING)

    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint, config = extractor_files(args.extractor_run)
    if args.diagnostics_only:
        print_diagnostics(args, checkpoint)
        return
    data_yaml = write_extractor_data(config, args.out, args.num_workers)
    rows = {"extractor": [run_extractor_row(args, checkpoint, data_yaml, args.out)]}
    for arm in args.arms:
        rows[arm] = []
        for seed in args.seeds:
            result = run_arm(args, arm, seed, checkpoint, data_yaml, args.out)
            rows[arm].append(result)
            print(f"{arm} seed {seed}: {result}", file=sys.stderr, flush=True)

    class_names = [k.split("/", 1)[1] for k in rows["extractor"][0] if k.startswith("recall/")]
    command = script_command("rebalancing.py", sys.argv[1:])
    header = (
        f"Rebalancing on {args.dataset}: extractor {checkpoint} | test split | seeds "
        f"{args.seeds} | {machine_line()}"
    )
    fit_times = {
        arm: mean_std([r["fit_s"] for r in runs])
        for arm, runs in rows.items()
        if arm != "extractor"
    }
    text = "\n\n".join(
        [
            f"```\n{command}\n```",
            f"```\n{header}\n```",
            table(rows, class_names),
            "Mean ± standard deviation over seeds (one row per arm). Fit wall time per arm (s): "
            + ", ".join(f"{arm} {t}" for arm, t in fit_times.items())
            + ".",
        ]
    )
    print(text)
    if args.write_docs:
        write_docs(text, args.dataset)
    print_diagnostics(args, checkpoint)


def print_diagnostics(args, checkpoint: Path) -> None:
    per_class = read_csv_rows(args.out / "extractor_test/version_0/test_per_class.csv")
    class_names = [row["class"] for row in per_class]
    print("\nTraining diagnostics, from the runs' metrics.csv:")
    print(extractor_line(checkpoint, args.extractor_run))
    print(diagnostics(args.out, args.arms, args.seeds, class_names))


if __name__ == "__main__":
    main()
