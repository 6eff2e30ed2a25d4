"""U-Net vs FCN lung segmentation with the shipped configs, against a plain PyTorch loop.

    python benchmarks/lung_segmentation.py --data-dir ../shared/data/lung_ct --image-size 64

A seeded ``--holdout-fraction`` of the slices is set aside; the rest is the ``data_dir`` of
each arm. ``unet`` and ``fcn``: ``medvision fit`` with configs/unet_lung.yaml or
configs/fcn_lung.yaml, then ``medvision predict`` of the held-out slices, scored at their own
size. ``plain``: a hand-written loop training the same smp U-Net with the same loss, optimizer,
schedule, augmentation, batch size, split and epochs, saving the same checkpoints. Each arm
runs in its own process; the table gives val and held-out Dice/IoU, mean epoch wall and CPU
time (EpochTimer's epochs for medvision, first left out) and peak memory; ``--rounds N`` adds
the per-round medvision/plain epoch-time ratios. docs/lung_segmentation.md shows the results.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from harness import plain
from harness.arms import Spread, alternate, print_result, run_arm_child
from harness.cli import script_parser
from harness.machine import DATA, REPO, machine_line, mean_after_first, peak_memory_mb
from harness.runs import overrides, read_csv_rows
from harness.tables import Column, Table

#: slices whose ground truth is wrong: kept in every "all" figure, left out of one column
KNOWN_LABEL_ERRORS = {
    "train_0099.tif": "the mask covers the whole body (lungs, mediastinum and chest wall), "
    "not the lungs",
}
CONFIGS = {"unet": REPO / "configs/unet_lung.yaml", "fcn": REPO / "configs/fcn_lung.yaml"}
NAMES = {
    "unet": "medvision U-Net (configs/unet_lung.yaml)",
    "fcn": "medvision FCN-8s (configs/fcn_lung.yaml)",
    "plain": "plain PyTorch loop, smp U-Net",
}
ROUNDS = Table(
    "round",
    Column("medvision U-Net epoch (s)", "unet", "{:.2f}"),
    Column("plain epoch (s)", "plain", "{:.2f}"),
    Column("wall ratio", "wall", "{:.3f}"),
    Column("CPU ratio", "cpu", "{:.3f}"),
)


def results_table(num_holdout: int, num_kept: int) -> Table:
    """The main table; its titles count the held-out slices."""
    return Table(
        Column("model", "arm", NAMES.get),
        Column("val Dice", "val_dice", "{:.4f}"),
        Column(f"held-out Dice (all {num_holdout})", "dice", "{:.4f}"),
        Column("held-out IoU (all)", "iou", "{:.4f}"),
        Column(f"held-out Dice ({num_kept}, label errors out)", "kept_dice", "{:.4f}"),
        Column("epoch (s)", "epoch_s", "{:.2f}"),
        Column("epoch CPU (s)", "epoch_cpu_s", "{:.2f}"),
        Column("peak memory (MB)", "peak_mb", "{:.0f}"),
    )


def make_holdout(data_dir: Path, out: Path, fraction: float, seed: int = 0) -> tuple[Path, Path]:
    """Symlink a seeded ``fraction`` of pairs into ``out/holdout``, the rest into ``out/pool``."""
    names = sorted(p.name for p in (data_dir / "2d_images").iterdir())
    order = np.random.default_rng(seed).permutation(len(names))
    num_holdout = round(len(names) * fraction)
    for part, indices in (("holdout", order[:num_holdout]), ("pool", order[num_holdout:])):
        for sub in ("2d_images", "2d_masks"):
            (out / part / sub).mkdir(parents=True, exist_ok=True)
            for link, name in ((out / part / sub / names[i], names[i]) for i in indices):
                if not link.exists():
                    link.symlink_to((data_dir / sub / name).resolve())
    return out / "pool", out / "holdout"


def measures(epochs: list, val_dice: float, holdout: dict, checkpoint: str) -> dict:
    """An arm's result: its scores, mean epoch wall and CPU time after the first, peak memory.

    With loader workers the CPU time leaves out the workers' own; with ``--num-workers 0`` it
    is all the work of the epoch (and leaves out what the machine spent on other guests).
    """
    wall, cpu = np.array(epochs).T
    return {
        "val_dice": val_dice,
        "holdout": holdout,
        "epoch_s": mean_after_first(list(wall)),
        "epoch_cpu_s": mean_after_first(list(cpu)),
        "peak_mb": peak_memory_mb("cuda" if torch.cuda.is_available() else "cpu"),
        "checkpoint": checkpoint,
    }


def run_medvision(arch: str, pool: Path, holdout: Path, run_dir: Path, args) -> dict:
    """``fit`` with the config, ``validate`` the best checkpoint, ``predict`` the held-out."""
    from medvision.cli import MedVisionCLI
    from medvision.training import EpochTimer

    data = {"data_dir": pool, "image_size": args.image_size, "num_workers": args.num_workers}
    trainer = {"default_root_dir": run_dir, "logger.init_args.save_dir": run_dir}
    common = overrides(CONFIGS[arch], data=data, trainer=trainer)
    cli = MedVisionCLI(
        args=overrides(CONFIGS[arch], args.epochs, data=data, trainer=trainer), run=False
    )
    timer = EpochTimer()  # each epoch from its start to the next's: checkpoint saving included
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, cli.datamodule)
    val = cli.trainer.validate(cli.model, cli.datamodule, ckpt_path="best", verbose=False)[0]
    best, predictions = cli.trainer.checkpoint_callback.best_model_path, run_dir / "predictions"
    shutil.rmtree(predictions, ignore_errors=True)  # predict never writes into an earlier run's
    predict = [f"--data.init_args.predict_dir={holdout}", f"--ckpt_path={best}"]
    predict += [f"--prediction_writer.output_dir={predictions}"]
    MedVisionCLI(args=["predict", *common, *predict])
    rows = read_csv_rows(predictions / "metrics.csv")  # each mask scored at its slice's size
    scores = {Path(r["image"]).name: [float(r["dice"]), float(r["iou"])] for r in rows}
    epochs = [[epoch["wall_s"], epoch["cpu_s"]] for epoch in timer.epochs]
    return measures(epochs, val["val/dice"], scores, best)


class PlainLungDataset(torch.utils.data.Dataset):
    """Slice-mask pairs read and transformed by hand: no medvision dataset."""

    def __init__(self, pairs: list[tuple[Path, Path]], transform) -> None:
        self.pairs, self.transform = pairs, transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = read_pair(*self.pairs[index])
        out = self.transform(image=image[..., None], mask=mask.astype(np.uint8))
        image = torch.from_numpy(out["image"].transpose(2, 0, 1).copy())
        return image, torch.from_numpy(out["mask"]).float()[None]


def read_pair(image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A slice min-max scaled to [0, 1] (float32) and its mask (bool), at the stored size."""
    import tifffile

    image = tifffile.imread(image_path).astype(np.float32)
    image = (image - image.min()) / max(float(image.max() - image.min()), 1e-6)
    return image, tifffile.imread(mask_path) > 127


def dice_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred, target = pred.flatten(1).float(), target.flatten(1).float()
    total = pred.sum(1) + target.sum(1)
    return torch.where(total == 0, 1.0, 2 * (pred * target).sum(1) / total.clamp(min=1))


def run_plain(pool: Path, holdout: Path, run_dir: Path, args) -> dict:
    """The plain U-Net loop with the configs' settings, saving what their checkpoints save."""
    from medvision.data.splits import split_indices
    from medvision.data.transforms import segmentation_transform

    torch.manual_seed(42)
    names = sorted(p.name for p in (pool / "2d_images").iterdir())
    pairs = [(pool / "2d_images" / n, pool / "2d_masks" / n) for n in names]
    split = split_indices(len(pairs), 0.1, 0.1, seed=42)  # the split medvision fit uses

    def loader(stage: str, augmentation: str) -> torch.utils.data.DataLoader:
        transform = segmentation_transform(args.image_size, augmentation)
        dataset = PlainLungDataset([pairs[i] for i in split[stage]], transform)
        workers = args.num_workers
        return torch.utils.data.DataLoader(
            dataset, batch_size=16, shuffle=stage == "train", num_workers=workers,
            persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
        )  # fmt: skip

    train, val = loader("train", "basic"), loader("val", "none")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = plain.unet("resnet34", in_channels=1)
    model.net.to(device)
    optimizer = torch.optim.AdamW(model.net.parameters(), lr=1e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    best_dice, times = -1.0, []
    for epoch in range(args.epochs):
        start = np.array([time.perf_counter(), time.process_time()])
        model.net.train()
        for image, mask in train:
            plain.train_step(model, optimizer, image.to(device), mask.to(device))
        scheduler.step()
        model.net.eval()
        with torch.no_grad():
            scores = [
                dice_per_image(model.net(image.to(device)).sigmoid() > 0.5, mask.to(device) > 0.5)
                for image, mask in val
            ]
        val_dice = torch.cat(scores).mean().item()
        # what the configs' checkpoints hold: last every epoch, best on improvement, both with
        # optimizer and scheduler state so that a run can resume
        state = {"model": model.net.state_dict(), "optimizer": optimizer.state_dict()}
        state |= {"scheduler": scheduler.state_dict(), "epoch": epoch}
        torch.save(state, run_dir / "plain_last.pt")
        if val_dice > best_dice:
            best_dice = val_dice
            torch.save(state, run_dir / "plain_best.pt")
        times.append(np.array([time.perf_counter(), time.process_time()]) - start)
    best = run_dir / "plain_best.pt"
    model.net.load_state_dict(torch.load(best, weights_only=True)["model"])
    return measures(times, best_dice, plain_holdout(model.net.eval(), holdout, args), str(best))


def plain_holdout(net, holdout: Path, args) -> dict:
    """Dice and IoU of each held-out slice, predicted at training size, scored at its own."""
    import torch.nn.functional as F

    from medvision.data.transforms import segmentation_transform

    resize, scores = segmentation_transform(args.image_size, "none"), {}
    device = next(net.parameters()).device
    with torch.no_grad():
        for name in sorted(p.name for p in (holdout / "2d_images").iterdir()):
            image, truth = read_pair(holdout / "2d_images" / name, holdout / "2d_masks" / name)
            x = torch.from_numpy(resize(image=image[..., None])["image"].transpose(2, 0, 1).copy())
            probs = net(x[None].to(device)).sigmoid()
            probs = F.interpolate(probs, image.shape[:2], mode="bilinear", align_corners=False)
            dice = dice_per_image(probs.cpu() > 0.5, torch.from_numpy(truth)[None]).item()
            scores[name] = [dice, dice / (2 - dice)]  # IoU from Dice, per image
    return scores


def run_arm(spec: dict) -> dict:
    """One arm (a child process): its folder under ``spec["out"]``, its result."""
    args = argparse.Namespace(**spec)
    out = Path(args.out)
    pool, holdout = make_holdout(Path(args.data_dir), out / "data", args.holdout_fraction)
    run_dir = out / args.arm
    run_dir.mkdir(parents=True, exist_ok=True)
    if args.arm == "plain":
        return run_plain(pool, holdout, run_dir, args)
    return run_medvision(args.arm, pool, holdout, run_dir, args)


def print_table(results: dict, args, out: Path) -> None:
    """The main table of one round, the label errors left out, the U-Net's epoch ratios."""
    holdout = sorted(next(iter(results.values()))["holdout"])
    kept = [name for name in holdout if name not in KNOWN_LABEL_ERRORS]
    print(
        f"\nLung CT segmentation: {args.data_dir} | image_size {args.image_size} | "
        f"{args.epochs} epochs | {len(holdout)} held-out slices never seen in training | "
        f"{machine_line()}\n"
    )
    rows = []
    for arm, result in results.items():
        dice, iou = np.array([result["holdout"][name] for name in holdout]).mean(0)
        kept_dice = np.mean([result["holdout"][name][0] for name in kept])
        rows.append({**result, "arm": arm, "dice": dice, "iou": iou, "kept_dice": kept_dice})
    print(results_table(len(holdout), len(kept)).markdown(rows))
    for name in sorted(set(holdout) - set(kept)):
        dice = ", ".join(f"{arm} {r['holdout'][name][0]:.3f}" for arm, r in results.items())
        print(f"\nLeft out of one column: {name}: {KNOWN_LABEL_ERRORS[name]} (Dice {dice}).")
    if "unet" in results and "plain" in results:
        unet, reference = results["unet"], results["plain"]
        print(
            "\nmedvision / plain epoch time (U-Net, train + validation): "
            f"wall {unet['epoch_s'] / reference['epoch_s']:.3f}, "
            f"main-process CPU {unet['epoch_cpu_s'] / reference['epoch_cpu_s']:.3f}"
        )
    print(f"\nRuns, checkpoints and predictions: {out}")


def print_rounds(rounds: list[dict]) -> None:
    """Per-round epoch times and the medvision/plain ratios of arms run back to back."""
    if not all("unet" in r and "plain" in r for r in rounds):
        return
    rows = [
        {"round": index, "unet": r["unet"]["epoch_s"], "plain": r["plain"]["epoch_s"]}
        | {"wall": r["unet"]["epoch_s"] / r["plain"]["epoch_s"]}
        | {"cpu": r["unet"]["epoch_cpu_s"] / r["plain"]["epoch_cpu_s"]}
        for index, r in enumerate(rounds)
    ]
    print("\n" + ROUNDS.markdown(rows))
    wall, cpu = (Spread.of(row[key] for row in rows) for key in ("wall", "cpu"))
    print(
        f"\nmedvision / plain over {len(rounds)} rounds: median wall ratio {wall.median:.3f} "
        f"(range {wall.min:.3f}-{wall.max:.3f}), median CPU ratio {cpu.median:.3f} "
        f"(range {cpu.min:.3f}-{cpu.max:.3f})"
    )


def build_parser():
    """The command line of this script."""
    parser = script_parser(
        __doc__, data_dir=DATA / "lung_ct", num_workers=2, rounds=1, out=None, arm=True
    )
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--holdout-fraction", type=float, default=0.15)
    parser.add_argument("--arms", default="unet,fcn,plain")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.arm:
        return print_result(run_arm(json.loads(args.arm)))
    if not (args.data_dir / "2d_images").is_dir():
        raise SystemExit(f"{args.data_dir} is not a Kaggle-layout lung CT folder (2d_images/)")
    out = args.out or Path(tempfile.mkdtemp(prefix="medvision_lung_bench_"))
    keys = ("image_size", "epochs", "holdout_fraction", "num_workers", "data_dir")
    spec = {key: getattr(args, key) for key in keys}

    def measure(arm: str, index: int) -> dict:  # each round trains anew in its own folder
        round_out = out if args.rounds == 1 else out / f"round{index}"
        return run_arm_child(__file__, {**spec, "arm": arm, "out": round_out})

    rounds = alternate(args.arms.split(","), measure, args.rounds, progress=True)
    print_table(rounds[0], args, out)
    if args.rounds > 1:
        print_rounds(rounds)


if __name__ == "__main__":
    main()
