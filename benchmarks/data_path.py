"""Where the lung CT loader's time goes, per sample and stage, and how fast its loader runs.

    python benchmarks/data_path.py
    python benchmarks/data_path.py --data-dir ../shared/data/lung_ct_fullres_sample --copies 20

On synthetic slices stored at ``--slice-size`` (or ``--data-dir``), at ``--image-size``,
augmentation ``basic``: (1) the stages of ``SegmentationDataset.__getitem__`` (decode,
normalize, resize, augment, to tensor) and the collate, timed one by one with medvision's own
functions on ``--samples`` slices (median of ``--repeats`` passes), beside those of the cached
path and each path's whole ``__getitem__``, plus one what-if (resize first, then normalize);
(2) the train loader's images/s for every ``--workers`` x ``--pin-memory`` (with CUDA only) x
``--prefetch`` (with workers only), cache off and on. This process runs at ``--threads`` torch
threads (1, as in a loader worker). docs/performance.md shows a run.
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
STAGES = Table(
    "stage",
    Column("uncached us/sample", "uncached"),
    Column("share", "uncached share"),
    Column("cached us/sample", "cached"),
    Column("share", "cached share"),
)
LOADER = Table(
    Column("cache", pattern=lambda on: "on" if on else "off"),
    "workers",
    Column("pin_memory", pattern=lambda on: "on" if on else "off"),
    "prefetch_factor",
    Column("first batch (s)", "first_s", "{:.2f}"),
    Column("images/s", "images_per_s", "{:,.0f}"),
)


def chains(dataset, cached) -> dict[str, list]:
    """Each path's stages as ``(name, step)``, each step taking what the one before gave.

    The cached dataset's two transforms (``transform``: the resize; ``augment``: the
    augmentation without it) are the two parts of the uncached dataset's transform.
    """
    from medvision.data.io import binarize_mask, normalize_intensity, read_image, to_channels

    def decode(i):
        return read_image(dataset.image_paths[i]), read_image(dataset.mask_paths[i]), i

    def normalize(decoded):
        raw, raw_mask, i = decoded
        image = normalize_intensity(to_channels(raw, dataset.in_channels))
        return {"image": image, "mask": binarize_mask(raw_mask, dataset.mask_paths[i])}

    def to_tensor(sample):  # what SegmentationDataset._finish does after the transform
        image = torch.from_numpy(np.ascontiguousarray(sample["image"].transpose(2, 0, 1)))
        return {"image": image, "mask": torch.from_numpy(sample["mask"]).float().unsqueeze(0)}

    def augment(sample):
        return cached.augment(image=sample["image"], mask=sample["mask"])

    def from_cache(i):
        return {"image": cached.images[i].astype(np.float32), "mask": cached.masks[i]}

    resize = ("resize", lambda sample: cached.transform(image=sample["image"], mask=sample["mask"]))
    tail = [("augment", augment), ("to tensor", to_tensor)]
    return {
        "uncached": [("decode", decode), ("normalize", normalize), resize, *tail],
        "cached": [("float16 -> float32", from_cache), *tail],
    }


def time_chain(chain: list, indices: list[int], batch_size: int) -> dict[str, float]:
    """Seconds per sample of each stage over ``indices``, and of collating them in batches."""
    spent = dict.fromkeys([name for name, _ in chain], 0.0)
    samples = []
    for index in indices:
        value = index
        for name, step in chain:
            begin = clock()
            value = step(value)
            spent[name] += clock() - begin
        samples.append(value)
    spent["collate"] = collate_seconds(samples, batch_size)
    return {name: seconds / len(indices) for name, seconds in spent.items()}


def collate_seconds(samples: list, batch_size: int) -> float:
    """Seconds to collate ``samples`` in batches of ``batch_size`` (torch's default collate)."""
    from torch.utils.data import default_collate

    begin = clock()
    for start in range(0, len(samples), batch_size):
        default_collate(samples[start : start + batch_size])
    return clock() - begin


def resize_first_seconds(dataset, size: tuple[int, int], indices: list[int]) -> float:
    """Seconds per sample to resize the decoded slice and mask (cv2, the pipeline's
    interpolations), then min-max normalize with the stored slice's own minimum and maximum:
    the same scaling but for the rounding of an integer slice's resize (half a stored step)."""
    import cv2

    from medvision.data.io import binarize_mask, normalize_intensity, read_image, to_channels

    paths = [(dataset.image_paths[i], dataset.mask_paths[i]) for i in indices]
    decoded = [(read_image(image), read_image(mask)) for image, mask in paths]
    (height, width), begin = size, clock()
    for (raw, raw_mask), index in zip(decoded, indices, strict=True):
        small = cv2.resize(raw, (width, height), interpolation=cv2.INTER_LINEAR)
        small_mask = cv2.resize(raw_mask, (width, height), interpolation=cv2.INTER_NEAREST)
        window = (float(raw.min()), float(raw.max()))
        normalize_intensity(to_channels(small, dataset.in_channels), window)
        binarize_mask(small_mask, dataset.mask_paths[index])
    return (clock() - begin) / len(indices)


def time_stages(dataset, cached, indices: list[int], batch_size: int, repeats: int) -> dict:
    """Median seconds per sample over ``repeats`` passes: each path's stages (``uncached``,
    ``cached``), its whole ``__getitem__`` plus collate (``<path> whole``), ``resize first``."""
    passes = []
    for _ in range(repeats):
        paths = chains(dataset, cached).items()
        times = {path: time_chain(chain, indices, batch_size) for path, chain in paths}
        times["resize first"] = resize_first_seconds(dataset, cached.image_size, indices)
        for path, data in (("uncached whole", dataset), ("cached whole", cached)):
            begin = clock()  # a loader without workers: __getitem__ of each, then the collate
            collate_seconds([data[index] for index in indices], batch_size)
            times[path] = (clock() - begin) / len(indices)
        passes.append(times)

    def median(values: list):
        if isinstance(values[0], dict):
            return {key: median([value[key] for value in values]) for key in values[0]}
        return float(np.median(values))

    return median(passes)


def stage_table(times: dict) -> str:
    """The stages of both paths in microseconds per sample, with their shares of the sum."""
    stages = list(dict.fromkeys([*UNCACHED_STAGES[:3], *CACHED_STAGES[:1], *UNCACHED_STAGES[3:]]))
    sums = {path: sum(times[path].values()) for path in PATHS}
    whole = {path: times[f"{path} whole"] for path in PATHS}
    empty = {"uncached share": "", "cached share": ""}

    def us(seconds: float) -> str:
        return f"{1e6 * seconds:,.0f}"

    rows = []
    for stage in stages:
        row = {"stage": stage}
        for path, value in ((p, times[p].get(stage)) for p in PATHS):
            if value is not None:
                row[path], row[f"{path} share"] = us(value), f"{100 * value / sums[path]:.0f}%"
        rows.append(row)
    rows += [
        {"stage": "sum of the stages", **{p: us(sums[p]) for p in PATHS}}
        | {"uncached share": "100%", "cached share": "100%"},
        {"stage": "whole __getitem__ + collate (measured)", **{p: us(whole[p]) for p in PATHS}}
        | empty,
        {"stage": "images/s on one core (1 / whole)", **{p: f"{1 / whole[p]:,.0f}" for p in PATHS}}
        | empty,
    ]
    if "resize first" in times:
        now = us(times["uncached"]["normalize"] + times["uncached"]["resize"])
        stage = f"what-if: resize, then normalize (instead of normalize + resize: {now})"
        rows.append({"stage": stage, "uncached": us(times["resize first"]), **empty})
    return STAGES.markdown(rows)


def loader_images_per_s(dataset, args, workers: int, pin: bool, prefetch: int | None) -> dict:
    """First-batch wait and images/s over ``--batches`` batches after it, for one setting."""
    from torch.utils.data import DataLoader

    loader = DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, num_workers=workers, pin_memory=pin,
        prefetch_factor=prefetch, persistent_workers=False,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    begin = clock()
    iterator = iter(loader)
    next(iterator)
    first, images, begin = clock() - begin, 0, clock()
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
    return [
        (workers, pin, prefetch)
        for workers in args.workers
        for pin in pins
        for prefetch in (args.prefetch if workers else [None])
    ]


def datamodule(data_dir: Path, args, cache: bool):
    """The lung CT datamodule after ``setup("fit")``, with its setup time in seconds."""
    from medvision.data import LungCTDataModule

    module = LungCTDataModule(
        data_dir, image_size=args.image_size, augmentation="basic", batch_size=args.batch_size,
        num_workers=0, cache=cache, cache_limit_gb=64,
    )  # fmt: skip
    begin = clock()
    module.setup("fit")
    return module, clock() - begin


def prepare_data(args, work: Path) -> tuple[Path, str]:
    """The folder to read and its description: synthetic, or ``--data-dir`` linked over."""
    if args.data_dir is None:
        return synthetic_lung(work, args.num_slices, args.slice_size, args.distinct)
    count = len(list((args.data_dir / "2d_images").iterdir()))
    if args.copies > 1:
        folder = linked_lung_copies(args.data_dir, work / "data", count * args.copies)
        return folder, f"{args.data_dir}, {count} slices linked {args.copies} times"
    return args.data_dir, f"{args.data_dir}, {count} slices"


def build_parser():
    """The command line of this benchmark."""
    parser = script_parser(__doc__, data_dir=None)
    add = parser.add_argument
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
    add("--threads", type=at_least(1), default=1, help="torch threads (1, as a loader worker)")
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
        uncached, uncached_s = datamodule(data_dir, args, cache=False)
        cached, cached_s = datamodule(data_dir, args, cache=True)
        dataset, cached_set = uncached.datasets["train"], cached.datasets["train"]
        indices = list(range(min(args.samples, len(dataset))))
        times = time_stages(dataset, cached_set, indices, args.batch_size, args.repeats)
        rows = [
            {"cache": cache, "workers": workers, "pin_memory": pin, "prefetch_factor": prefetch}
            | loader_images_per_s(data, args, workers, pin, prefetch)
            for cache, data in ((False, dataset), (True, cached_set))
            for workers, pin, prefetch in ([] if args.skip_loader else loader_settings(args))
        ]
    print(f"Machine: {machine_line()}")
    print(
        f"Data: {source}; image_size {args.image_size}, augmentation basic, batch "
        f"{args.batch_size}; {len(dataset)} training slices; {args.threads} torch thread(s) in "
        "this process (loader workers: 1 each)"
    )
    print(
        f"Datamodule setup: cache off {uncached_s:.1f} s (the input scan decodes every pair), "
        f"cache on {cached_s:.1f} s (the scan, then every split decoded and resized once)"
    )
    print(f"\nStages: {len(indices)} slices, median of {args.repeats} passes\n")
    print(stage_table(times))
    if rows:
        pin_note = "" if torch.cuda.is_available() else " (pin_memory on: not run, no CUDA here)"
        print(f"\nLoader: {args.batches} batches after the first{pin_note}\n")
        print(LOADER.markdown(rows))


if __name__ == "__main__":
    main()
