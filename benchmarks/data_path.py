"""Where the lung CT loader's time goes, per sample and stage, and how fast its loader runs.

    python benchmarks/data_path.py
    python benchmarks/data_path.py --data-dir ../shared/data/lung_ct_fullres_sample --copies 20

On synthetic slices stored at ``--slice-size`` (512, the real set's original size; ``--distinct``
phantoms written once, linked over) or on ``--data-dir``, at the configs' training size
(``--image-size`` 256), augmentation ``basic``:

1. **Stages.** The pieces of ``SegmentationDataset.__getitem__`` timed one by one on
   ``--samples`` training slices, ``--repeats`` passes (median per sample): ``decode`` (image
   and mask: ``medvision.data.io.read_image``, tifffile or PIL), ``normalize`` (``to_channels``,
   ``normalize_intensity``, ``binarize_mask``), ``resize`` (``segmentation_transform(size,
   "none")``), ``augment`` (``segmentation_transform(size, "basic", resize=False)``),
   ``to tensor`` (the transpose and copies of ``_finish``) and ``collate`` (``default_collate``
   of ``--batch-size`` samples, per sample). The cached path (``CachedSegmentationDataset``)
   runs only float16 -> float32, augment, to tensor and collate. Each path's whole
   ``__getitem__`` plus collate is timed too, as a check on the sum.
2. **Loader.** Images/s of a ``DataLoader`` over the datamodule's train split, as medvision
   builds it (shuffle, ``--batch-size``), for every combination of ``--workers``,
   ``--pin-memory`` (only where CUDA is present: pinning needs it) and ``--prefetch`` (with
   workers only), with ``cache`` off and on; timed over ``--batches`` batches after the first
   (whose wait, worker start-up included, is its own column).

Beside the stages, one alternative that medvision does not run (a what-if for the data
path's design): resize the stored slice and mask first (cv2, the interpolations of the
pipeline's ``Resize``), then normalize with the stored slice's own minimum and maximum (the
same min-max scaling, but for the rounding of an integer slice's resize: at most half a stored
intensity step), instead of normalizing at the stored size.

This process runs at ``--threads`` torch threads (1, as PyTorch sets each loader worker), so
that the stages and the 0-worker loader run as a worker does. Printed: the machine, the
settings, the datamodule's setup time per cache setting (its input scan decodes every pair;
the cache decodes and resizes every slice once), the stage table and the loader table.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from harness.cli import at_least, int_list, script_parser, switch_list
from harness.machine import machine_line
from harness.runs import linked_lung_copies, synthetic_lung
from harness.tables import Column, Table

clock = time.perf_counter
UNCACHED_STAGES = ("decode", "normalize", "resize", "augment", "to tensor", "collate")
CACHED_STAGES = ("float16 -> float32", "augment", "to tensor", "collate")
PATHS = ("uncached", "cached")

#: both paths' stages in microseconds per sample, with their shares of the sum
STAGES = Table(
    "stage",
    Column("uncached us/sample", "uncached"),
    Column("share", "uncached share"),
    Column("cached us/sample", "cached"),
    Column("share", "cached share"),
)
#: the train loader's images/s per setting
LOADER = Table(
    Column("cache", pattern=lambda on: "on" if on else "off"),
    "workers",
    Column("pin_memory", pattern=lambda on: "on" if on else "off"),
    "prefetch_factor",
    Column("first batch (s)", "first_s", "{:.2f}"),
    Column("images/s", "images_per_s", "{:,.0f}"),
)


# --- stages --------------------------------------------------------------------------------------
def time_stages(dataset, cached, indices: list[int], batch_size: int, repeats: int) -> dict:
    """Median seconds per sample of each stage, and of each path's whole ``__getitem__``.

    Args:
        dataset: the uncached ``SegmentationDataset`` of the train split.
        cached: the same split as a filled ``CachedSegmentationDataset``; its two transforms
            (``transform``: the resize; ``augment``: the augmentation without it) are the
            uncached transform's two parts.
        indices: the samples to time.
        batch_size: samples per collated batch.
        repeats: passes over ``indices``; the median pass counts.

    Returns:
        ``{"uncached": {stage: s}, "cached": {stage: s}, "uncached whole": s, "cached whole": s}``.
    """
    from medvision.data.io import binarize_mask, normalize_intensity, read_image, to_channels

    passes = {"uncached": [], "cached": [], "uncached whole": [], "cached whole": []}
    passes["resize first"] = []
    for _ in range(repeats):
        spent = dict.fromkeys(UNCACHED_STAGES, 0.0)
        samples = []
        for index in indices:
            marks = [clock()]
            raw = read_image(dataset.image_paths[index])
            raw_mask = read_image(dataset.mask_paths[index])
            marks.append(clock())
            image = normalize_intensity(to_channels(raw, dataset.in_channels))
            mask = binarize_mask(raw_mask, dataset.mask_paths[index])
            marks.append(clock())
            resized = cached.transform(image=image, mask=mask)  # the resize alone
            marks.append(clock())
            out = cached.augment(image=resized["image"], mask=resized["mask"])
            marks.append(clock())
            samples.append(as_tensors(out["image"], out["mask"]))
            marks.append(clock())
            for stage, begin, end in zip(UNCACHED_STAGES, marks, marks[1:], strict=False):
                spent[stage] += end - begin
        spent["collate"] = collate_seconds(samples, batch_size)
        passes["uncached"].append({k: v / len(indices) for k, v in spent.items()})
        passes["cached"].append(cached_pass(cached, indices, batch_size))
        passes["resize first"].append(resize_first_seconds(dataset, cached.image_size, indices))
        for path, data in (("uncached whole", dataset), ("cached whole", cached)):
            passes[path].append(whole_seconds(data, indices, batch_size))
    return {
        path: median_pass(runs) if isinstance(runs[0], dict) else float(np.median(runs))
        for path, runs in passes.items()
    }


def resize_first_seconds(dataset, size: tuple[int, int], indices: list[int]) -> float:
    """Seconds per sample to resize the decoded slice and mask, then min-max normalize.

    The alternative to ``normalize`` + ``resize``: the scaling uses the stored slice's minimum
    and maximum (as a window), so its result is the same min-max scaling at the smaller size,
    but for the rounding of an integer slice's resize (at most half a stored intensity step).
    """
    import cv2

    from medvision.data.io import binarize_mask, normalize_intensity, read_image, to_channels

    decoded = [
        (read_image(dataset.image_paths[i]), read_image(dataset.mask_paths[i])) for i in indices
    ]
    height, width = size
    begin = clock()
    for (raw, raw_mask), index in zip(decoded, indices, strict=True):
        window = (float(raw.min()), float(raw.max()))
        small = cv2.resize(raw, (width, height), interpolation=cv2.INTER_LINEAR)
        small_mask = cv2.resize(raw_mask, (width, height), interpolation=cv2.INTER_NEAREST)
        normalize_intensity(to_channels(small, dataset.in_channels), window)
        binarize_mask(small_mask, dataset.mask_paths[index])
    return (clock() - begin) / len(indices)


def as_tensors(image: np.ndarray, mask: np.ndarray) -> dict:
    """What ``SegmentationDataset._finish`` does after the transform: C x H x W tensors."""
    return {
        "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
        "mask": torch.from_numpy(mask).float().unsqueeze(0),
    }


def collate_seconds(samples: list[dict], batch_size: int) -> float:
    """Seconds to collate ``samples`` in batches of ``batch_size`` (torch's default collate)."""
    from torch.utils.data import default_collate

    begin = clock()
    for start in range(0, len(samples), batch_size):
        default_collate(samples[start : start + batch_size])
    return clock() - begin


def cached_pass(cached, indices: list[int], batch_size: int) -> dict:
    """Seconds per sample of the cached path's stages over ``indices``."""
    spent = dict.fromkeys(CACHED_STAGES, 0.0)
    samples = []
    for index in indices:
        marks = [clock()]
        image = cached.images[index].astype(np.float32)
        marks.append(clock())
        out = cached.augment(image=image, mask=cached.masks[index])
        marks.append(clock())
        samples.append(as_tensors(out["image"], out["mask"]))
        marks.append(clock())
        for stage, begin, end in zip(CACHED_STAGES, marks, marks[1:], strict=False):
            spent[stage] += end - begin
    spent["collate"] = collate_seconds(samples, batch_size)
    return {k: v / len(indices) for k, v in spent.items()}


def whole_seconds(dataset, indices: list[int], batch_size: int) -> float:
    """Seconds per sample of ``dataset[i]`` plus the collate, as a loader without workers runs."""
    from torch.utils.data import default_collate

    begin = clock()
    samples = [dataset[index] for index in indices]
    for start in range(0, len(samples), batch_size):
        default_collate(samples[start : start + batch_size])
    return (clock() - begin) / len(indices)


def median_pass(runs: list[dict]) -> dict:
    return {stage: float(np.median([run[stage] for run in runs])) for stage in runs[0]}


def stage_table(times: dict) -> str:
    """The stages of both paths in microseconds per sample, with their shares of the sum."""
    stages = list(dict.fromkeys([*UNCACHED_STAGES[:3], *CACHED_STAGES[:1], *UNCACHED_STAGES[3:]]))
    sums = {path: sum(times[path].values()) for path in PATHS}

    def us(seconds: float) -> str:
        return f"{1e6 * seconds:,.0f}"

    rows = []
    for stage in stages:
        row = {"stage": stage}
        for path in PATHS:
            value = times[path].get(stage)
            if value is not None:
                row[path], row[f"{path} share"] = us(value), f"{100 * value / sums[path]:.0f}%"
        rows.append(row)
    whole = {path: times[f"{path} whole"] for path in PATHS}
    empty = {"uncached share": "", "cached share": ""}
    rows += [
        {"stage": "sum of the stages", **{p: us(sums[p]) for p in PATHS}}
        | {"uncached share": "100%", "cached share": "100%"},
        {"stage": "whole __getitem__ + collate (measured)", **{p: us(whole[p]) for p in PATHS}}
        | empty,
        {"stage": "images/s on one core (1 / whole)", **{p: f"{1 / whole[p]:,.0f}" for p in PATHS}}
        | empty,
    ]
    if "resize first" in times:
        now = times["uncached"]["normalize"] + times["uncached"]["resize"]
        stage = f"what-if: resize, then normalize (instead of normalize + resize: {us(now)})"
        rows.append({"stage": stage, "uncached": us(times["resize first"]), **empty})
    return STAGES.markdown(rows)


# --- loader --------------------------------------------------------------------------------------
def loader_images_per_s(dataset, args, workers: int, pin: bool, prefetch: int | None) -> dict:
    """First-batch wait and images/s over ``--batches`` batches after it, for one setting."""
    from torch.utils.data import DataLoader

    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=pin,
        prefetch_factor=prefetch,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(0),
    )
    begin = clock()
    iterator = iter(loader)
    next(iterator)
    first = clock() - begin
    images, begin = 0, clock()
    for _ in range(args.batches):
        try:
            batch = next(iterator)
        except StopIteration:  # a small split: go on with the next epoch
            iterator = iter(loader)
            batch = next(iterator)
        images += len(batch["image"])
    return {"first_s": first, "images_per_s": images / (clock() - begin)}


def loader_settings(args) -> list[tuple[int, bool, int | None]]:
    """``(workers, pin_memory, prefetch_factor)`` combinations; prefetch only with workers."""
    pins = [pin for pin in args.pin_memory if not pin or torch.cuda.is_available()]
    out = []
    for workers in args.workers:
        for pin in pins:
            prefetches = args.prefetch if workers else [None]
            out += [(workers, pin, prefetch) for prefetch in prefetches]
    return out


# --- main ----------------------------------------------------------------------------------------
def datamodule(data_dir: Path, args, cache: bool):
    """The lung CT datamodule after ``setup("fit")``, with its setup time in seconds."""
    from medvision.data import LungCTDataModule

    module = LungCTDataModule(
        data_dir,
        image_size=args.image_size,
        augmentation="basic",
        batch_size=args.batch_size,
        num_workers=0,
        cache=cache,
        cache_limit_gb=64,
    )
    begin = clock()
    module.setup("fit")
    return module, clock() - begin


def prepare_data(args, work: Path) -> tuple[Path, str]:
    """The folder to read and its description: synthetic, or ``--data-dir`` linked over."""
    if args.data_dir is None:
        folder = synthetic_lung(work, args.num_slices, args.slice_size, args.distinct)
        return folder, (
            f"synthetic lung CT, {args.num_slices} slices stored at {args.slice_size}x"
            f"{args.slice_size} uint8 TIFF ({args.distinct} distinct, linked over)"
        )
    count = len(list((args.data_dir / "2d_images").iterdir()))
    if args.copies > 1:
        folder = linked_lung_copies(args.data_dir, work / "data", count * args.copies)
        return folder, f"{args.data_dir}, {count} slices linked {args.copies} times"
    return args.data_dir, f"{args.data_dir}, {count} slices"


def build_parser():
    """The command line of this benchmark."""
    parser = script_parser(__doc__)
    add = parser.add_argument
    add("--data-dir", type=Path, help="a lung CT folder (default: synthetic slices)")
    add("--copies", type=at_least(1), default=1, help="link --data-dir's slices this many times")
    add("--num-slices", type=at_least(10), default=200, help="synthetic slices")
    add("--distinct", type=at_least(1), default=8, help="synthetic phantoms written, linked over")
    add("--slice-size", type=at_least(32), default=512, help="synthetic slices' stored side")
    add("--image-size", type=at_least(32), default=256, help="training size (the configs')")
    add("--batch-size", type=at_least(1), default=16, help="the configs' 16")
    add("--samples", type=at_least(1), default=48, help="slices timed stage by stage")
    add("--repeats", type=at_least(1), default=3, help="passes over them (median)")
    add("--workers", type=int_list, default=[0, 1, 2], help="loader workers to try")
    add("--pin-memory", type=switch_list, default=[False, True], help="off, on or off,on")
    add("--prefetch", type=int_list, default=[2, 4], help="prefetch factors (with workers)")
    add("--batches", type=at_least(1), default=6, help="timed batches per loader setting")
    add(
        "--threads",
        type=at_least(1),
        default=1,
        help="torch threads of this process (default 1, what PyTorch gives each loader worker: "
        "the stages and the 0-worker loader then run as a worker does)",
    )
    add("--skip-loader", action="store_true", help="time the stages only")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Prepare the data, time the stages and the loader settings, print the tables."""
    args = build_parser().parse_args(argv)
    if args.data_dir is not None and not (args.data_dir / "2d_images").is_dir():
        raise SystemExit(f"--data-dir {args.data_dir}: not a lung CT folder (2d_images/).")
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="medvision_data_path_") as tmp:
        data_dir, source = prepare_data(args, Path(tmp))
        plain, plain_setup = datamodule(data_dir, args, cache=False)
        cached, cached_setup = datamodule(data_dir, args, cache=True)
        dataset, cached_set = plain.datasets["train"], cached.datasets["train"]
        indices = list(range(min(args.samples, len(dataset))))
        times = time_stages(dataset, cached_set, indices, args.batch_size, args.repeats)
        rows = []
        if not args.skip_loader:
            for cache, data in ((False, dataset), (True, cached_set)):
                for workers, pin, prefetch in loader_settings(args):
                    result = loader_images_per_s(data, args, workers, pin, prefetch)
                    setting = {"workers": workers, "pin_memory": pin, "prefetch_factor": prefetch}
                    rows.append({"cache": cache, **setting, **result})
    print(f"Machine: {machine_line()}")
    print(
        f"Data: {source}; image_size {args.image_size}, augmentation basic, batch "
        f"{args.batch_size}; {len(dataset)} training slices; {args.threads} torch thread(s) in "
        "this process (loader workers: 1 each)"
    )
    print(
        f"Datamodule setup: cache off {plain_setup:.1f} s (the input scan decodes every pair), "
        f"cache on {cached_setup:.1f} s (the scan, then every split decoded and resized once)"
    )
    print(f"\nStages: {len(indices)} slices, median of {args.repeats} passes\n")
    print(stage_table(times))
    if rows:
        pin_note = "" if torch.cuda.is_available() else " (pin_memory on: not run, no CUDA here)"
        print(f"\nLoader: {args.batches} batches after the first{pin_note}\n")
        print(LOADER.markdown(rows))


if __name__ == "__main__":
    main()
