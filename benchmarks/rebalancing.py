"""Class-imbalance remedies on one trained classifier: plain, weighted, sampler, feature GAN.

    python benchmarks/rebalancing.py --dataset ham10000 \
        --extractor-run runs/resnet50_ham10000_7class --seeds 0 1 2 --out /tmp/rebalancing

``--extractor-run`` is a finished ``medvision fit`` of a classification config on the same
data; its saved data block (folder, size, split) is reused as is. Each arm is
``configs/rebalance_<dataset>.yaml``, composed with ``configs/rebalancing/<arm>.yaml`` but for
``plain``: it retrains the extractor's head on cached feature maps, once per ``--seeds`` seed,
and tests its best checkpoint. Printed: test accuracy, balanced accuracy, macro-F1 and per-class
recall, mean ± std over seeds, the extractor's own head first (``--write-docs``: into
docs/rebalancing.md); then diagnostics from the runs' ``metrics.csv`` (``--diagnostics-only``
reprints them): the extractor's checkpoint, each arm's first-epoch training loss, the GAN's
head accuracy on real features and its generated/real spread per class.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from harness.cli import script_parser, this_command
from harness.machine import REPO, machine_line
from harness.runs import read_csv_rows
from harness.tables import Column, Table, write_marked

ARMS = {
    "plain": ([], "plain cross-entropy"),
    "class_weighted": (["class_weighted.yaml"], "class-weighted cross-entropy"),
    "weighted_sampler": (["weighted_sampler.yaml"], "weighted sampler"),
    "feature_gan": (["feature_gan.yaml"], "feature GAN (real + generated)"),
}
EXTRACTOR = "extractor as trained (no retraining)"
DOCS = REPO / "docs/rebalancing.md"


def arm_args(args, arm: str, seed: int, data_yaml: Path, run_dir: Path) -> list[str]:
    """The CLI arguments of one arm and seed."""
    configs = [f"configs/rebalance_{args.dataset}.yaml"]
    configs += [f"configs/rebalancing/{name}" for name in ARMS[arm][0]]
    cli = [item for config in configs for item in ("--config", str(REPO / config))]
    cli += [
        f"--seed_everything={seed}",
        f"--data.init_args.classifier_checkpoint={args.checkpoint}",
        f"--data.init_args.data={data_yaml}",
        f"--data.init_args.seed={seed}",
        f"--trainer.default_root_dir={run_dir}",
        f"--trainer.logger.init_args.save_dir={run_dir}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    cli += [] if args.epochs is None else [f"--trainer.max_epochs={args.epochs}"]
    if arm == "feature_gan":
        cli.append(f"--model.init_args.seed={seed}")
        if args.gan_epochs is not None:
            cli.append(f"--model.init_args.gan_epochs={args.gan_epochs}")
        if args.gan_width is not None:
            cli.append(f"--model.init_args.generator_width={args.gan_width}")
            cli.append(f"--model.init_args.discriminator_width={args.gan_width}")
    return cli + args.extra


def run_arm(args, arm: str, seed: int | None, data_yaml: Path) -> dict:
    """Fit (``seed`` None: only test the extractor's own head) and test; the test scores."""
    from medvision.cli import MedVisionCLI

    run_dir = args.out / ("extractor_test" if seed is None else f"{arm}_seed{seed}")
    cli = MedVisionCLI(args=arm_args(args, arm, seed or 0, data_yaml, run_dir), run=False)
    start = time.perf_counter()
    if seed is not None:
        cli.trainer.fit(cli.model, cli.datamodule)
    fit_s = time.perf_counter() - start
    best = None if seed is None else "best"
    metrics = cli.trainer.test(cli.model, cli.datamodule, ckpt_path=best, verbose=False)[0]
    names = ("accuracy", "balanced_accuracy", "f1")
    names += tuple(f"recall/{c}" for c in cli.datamodule.class_names)
    return {name: metrics[f"test/{name}"] for name in names} | {"fit_s": fit_s}


def mean_std(values: list[float]) -> str:
    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def table(rows: dict[str, list[dict]], class_names: list[str]) -> str:
    """Mean ± std over seeds of each arm's test scores, one row per arm."""
    columns = {"accuracy": "accuracy", "balanced accuracy": "balanced_accuracy", "macro-F1": "f1"}
    columns |= {f"recall {c}": f"recall/{c}" for c in class_names}
    table = Table("arm", *(Column(title, key) for title, key in columns.items()))
    return table.markdown(
        {key: mean_std([run[key] for run in runs]) for key in columns.values()}
        | {"arm": ARMS[arm][1] if arm in ARMS else EXTRACTOR}
        for arm, runs in rows.items()
    )


def logged(run_dir: Path, key: str) -> list[tuple[int, float]]:
    """``(epoch, value)`` of every row of a run's metrics.csv that logged ``key``."""
    rows = read_csv_rows(run_dir / "version_0/metrics.csv")
    return [(int(r["epoch"]), float(r[key])) for r in rows if r.get(key)]


def diagnostics(args) -> str:
    """What the runs' own logs say: how much the head had to learn, and the GAN's spread."""
    import torch

    per_class = read_csv_rows(args.out / "extractor_test/version_0/test_per_class.csv")
    epoch = torch.load(args.checkpoint, map_location="cpu", weights_only=False, mmap=True)["epoch"]
    balanced = dict(logged(args.extractor_run, "val/balanced_accuracy"))
    lines = [
        f"extractor: {max(balanced) + 1} epochs trained, checkpoint from epoch {epoch}, its "
        f"validation balanced accuracy {balanced[epoch]:.3f}"
    ]
    for arm in args.arms:
        runs = [args.out / f"{arm}_seed{seed}" for seed in args.seeds]
        if arm != "feature_gan":
            first = [logged(run, "train/loss_epoch")[0][1] for run in runs]
            lines.append(f"{arm}: training loss in the first epoch {mean_std(first)}")
            continue
        accuracy = [v for run in runs for _, v in logged(run, "train/head_real_accuracy_epoch")]
        lines.append(
            "feature_gan: head accuracy on real training features per GAN epoch, all seeds: "
            + (f"{min(accuracy):.3f} to {max(accuracy):.3f}" if accuracy else "none logged")
        )
        for name in [row["class"] for row in per_class]:
            ratios = [logged(run, f"gan/std_ratio/{name}") for run in runs]
            if all(ratios):
                first, last = [r[0][1] for r in ratios], [r[-1][1] for r in ratios]
                lines.append(
                    f"feature_gan: generated/real feature std ratio, {name}: after the first GAN "
                    f"epoch {min(first):.2f}-{max(first):.2f}, after the last "
                    f"{min(last):.2f}-{max(last):.2f} (range over seeds)"
                )
    return "\n".join(lines)


def build_parser():
    """The command line of this script."""
    parser = script_parser(__doc__, num_workers=2, write_docs=True)
    add = parser.add_argument
    add("--dataset", choices=["ham10000", "chestxray"], required=True)
    add("--extractor-run", type=Path, required=True)
    add("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    add("--epochs", type=int, help="trainer.max_epochs (default: the config's)")
    add("--gan-epochs", type=int, help="the GAN arm's gan_epochs")
    add("--gan-width", type=int, help="the GAN arm's generator/discriminator width")
    add("--out", type=Path, required=True)
    add("--diagnostics-only", action="store_true", help="only the diagnostics of runs in --out")
    add("extra", nargs="*", help="more CLI overrides for every arm, after --")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    run = args.extractor_run / "version_0"
    args.checkpoint, config = run / "checkpoints/best.ckpt", run / "config.yaml"
    for path in (args.checkpoint, config):
        if not path.is_file():
            sys.exit(f"{path} not found: --extractor-run must be a finished `medvision fit` run")
    if not args.diagnostics_only:
        data = yaml.safe_load(config.read_text())["data"]  # the extractor's data, its split
        data["init_args"]["num_workers"] = args.num_workers
        if "check_images" in data["init_args"]:
            data["init_args"]["check_images"] = False  # the extractor's run decoded every image
        data_yaml = args.out / "extractor_data.yaml"
        data_yaml.write_text(yaml.safe_dump(data))
        rows = {"extractor": [run_arm(args, "plain", None, data_yaml)]}
        for arm in args.arms:
            rows[arm] = [run_arm(args, arm, seed, data_yaml) for seed in args.seeds]
            print(f"{arm}: {rows[arm]}", file=sys.stderr, flush=True)
        classes = [key.split("/", 1)[1] for key in rows["extractor"][0] if "recall/" in key]
        fit_s = [f"{arm} {mean_std([r['fit_s'] for r in rows[arm]])}" for arm in args.arms]
        header = (
            f"Rebalancing on {args.dataset}: extractor {args.checkpoint} | test split | seeds "
            f"{args.seeds} | {machine_line()}"
        )
        text = (
            f"```\n{this_command('rebalancing.py')}\n```\n\n```\n{header}\n```\n\n"
            f"{table(rows, classes)}\n\nMean ± standard deviation over seeds (one row per arm). "
            f"Fit wall time per arm (s): {', '.join(fit_s)}."
        )
        print(text)
        if args.write_docs:
            markers = [f"<!-- rebalancing-{args.dataset}:{end} -->" for end in ("start", "end")]
            write_marked(DOCS, *markers, text, append=False)
    print("\nTraining diagnostics, from the runs' metrics.csv:")
    print(diagnostics(args))


if __name__ == "__main__":
    main()
