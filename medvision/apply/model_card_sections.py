"""The Markdown sections of a model card (:mod:`medvision.apply.model_card`).

Each function renders one section from the preprocessing record and the run's facts (a
``RunFacts`` of :mod:`medvision.apply.model_card`), or returns ``""`` when it has nothing to
say: a section without data is left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import yaml

from medvision.models.record import Preprocessing

#: Packages named in the training recipe, as ``run_info.json`` lists them.
RECIPE_PACKAGES = ("torch", "lightning", "segmentation-models-pytorch", "timm", "torchmetrics")


def number(value: float | None, digits: int = 4) -> str:
    """A card's number: ``digits`` decimals, ``-`` for none or NaN.

    Args:
        value: The number.
        digits: Decimals shown.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    """A Markdown table.

    Args:
        header: The column titles.
        rows: The cells of each row (shown with ``str``).
    """
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def smoke_run(facts) -> bool:
    """Whether the fit was reduced (``fast_dev_run``, or fewer training batches per epoch
    than the data holds): its figures show that the pipeline runs, not what the model can do.

    Args:
        facts: The run's facts (``run_info.json``'s ``fit``).
    """
    fit = facts.info.get("fit") or {}
    used, available = fit.get("train_batches_per_epoch"), fit.get("train_batches_available")
    reduced = used is not None and available is not None and used < available
    return bool(fit.get("fast_dev_run")) or reduced


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _names(names: Iterable[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def intended_use(record: Preprocessing) -> str:
    """What the model does, what it reads and what it gives.

    Args:
        record: The preprocessing record.
    """
    if record.input == "volume":
        reads = (
            "3D volumes (NIfTI files or DICOM series), read in canonical RAS+ orientation and "
            f"predicted slice by slice along axis {record.slice_axis}"
        )
    else:
        reads = "2D images (png, jpg, tif, bmp, DICOM), any size and dtype"
    channels = "gray (1 channel)" if record.in_channels == 1 else "RGB (3 channels)"
    scope = "volume" if record.input == "volume" else "image"
    scaling = (
        f"clipped to [{record.intensity_window[0]:g}, {record.intensity_window[1]:g}] and "
        "scaled to [0, 1], the same window for every image"
        if record.intensity_window is not None
        else f"scaled from each {scope}'s minimum to its maximum"
    )
    height, width = record.image_size
    lines = [
        f"- Reads: {reads}, as {channels}.",
        f"- Intensities: {scaling}.",
        f"- The network sees {height} x {width} pixels ({record.interpolation} resize).",
        f"- Gives: {_output(record)}",
    ]
    task = "Segments" if record.task == "segmentation" else "Classifies images into"
    return (
        "## Intended use and modality\n\n"
        + f"{task} {_names(record.class_names)}.\n\n"
        + ("\n".join(lines))
    )


def _output(record: Preprocessing) -> str:
    if record.task == "segmentation" and record.num_classes == 1:
        return (
            f"a mask at the input's own size: `{record.class_names[0]}` where the probability "
            f"is above {record.mask_threshold:g}."
        )
    if record.task == "segmentation":
        return "a label map at the input's own size: each pixel its most probable class (0 first)."
    if record.multilabel:
        thresholds = ", ".join(
            f"{n} {t:.3f}"
            for n, t in zip(record.class_names, record.thresholds or (), strict=False)
        )
        return f"a probability per label (sigmoid); labels above their thresholds ({thresholds})."
    calibrated = f", temperature {record.temperature:.4g}" if record.temperature != 1 else ""
    return f"a probability per class (softmax{calibrated}) and the most probable class."


def data_layout(facts) -> str | None:
    """The class path of the datamodule the model was trained on (``run_info.json``, else
    ``config.yaml``), or None.

    Args:
        facts: The run's facts.
    """
    data = facts.info.get("data") or {}
    return data.get("datamodule") or (_config(facts).get("data") or {}).get("class_path")


def training_data(record: Preprocessing, facts) -> str:
    """Layout, classes, splits, image size and the data's fingerprint.

    Args:
        record: The preprocessing record.
        facts: The run's facts.
    """
    data, layout = facts.info.get("data") or {}, data_layout(facts)
    folder = ((_config(facts).get("data") or {}).get("init_args") or {}).get("data_dir")
    lines = []
    if layout:
        lines.append(f"- Layout: `{layout}`" + (f", data folder `{folder}`" if folder else ""))
    lines.append(f"- Classes: {_names(record.class_names)}")
    height, width = record.image_size
    lines.append(f"- Image size: resized to {height} x {width} pixels for the network")
    if data.get("fingerprint"):
        lines.append(
            f"- Data fingerprint: `{data['fingerprint']}` (sha256 of the splits' file lists)"
        )
    text = "## Training data\n\n" + "\n".join(lines)
    splits = data.get("splits") or {}
    if splits:
        classes = list(record.class_names)
        counted = any("classes" in split for split in splits.values())
        header = ["split", "images", *(classes if counted else [])]
        rows = [
            [name, split["images"], *([split.get("classes", {}).get(c, "-") for c in classes])]
            if counted
            else [name, split["images"]]
            for name, split in splits.items()
        ]
        text += "\n\n" + table(header, rows)
    return text


def _config(facts) -> dict:
    try:
        loaded = yaml.safe_load(facts.config_text) if facts.config_text else None
    except yaml.YAMLError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def training_recipe(facts) -> str:
    """Epochs, duration, hardware, versions and the resolved config; "" outside a run.

    Args:
        facts: The run's facts.
    """
    if facts.run is None:
        return ""
    info, fit, lines = facts.info, facts.info.get("fit") or {}, []
    if fit:
        lines.append(
            f"- Trained {_count(fit['epochs'], 'epoch')} (max_epochs {fit.get('max_epochs')}), "
            f"{_count(fit['steps'], 'optimizer step')}, in {_duration(fit['duration_s'])} "
            f"(started {fit['started']})"
        )
        if fit.get("train_batches_per_epoch") is not None:
            available = fit.get("train_batches_available")
            of = f" of the {available} the data holds" if available is not None else ""
            lines.append(f"- Training batches per epoch: {fit['train_batches_per_epoch']}{of}")
    hardware = info.get("hardware") or {}
    if hardware:
        gpus = ", ".join(hardware.get("gpus") or []) or "no GPU"
        lines.append(
            f"- Hardware: {hardware.get('cpu_count')} CPU cores, {gpus}; Python "
            f"{hardware.get('python')}, {hardware.get('platform')}"
        )
    packages = info.get("packages") or {}
    versions = [f"{name} {packages[name]}" for name in RECIPE_PACKAGES if packages.get(name)]
    if versions:
        lines.append("- Software: " + ", ".join(versions))
    git = info.get("git") or {}
    if git.get("commit"):
        dirty = " with uncommitted changes" if git.get("dirty") else ""
        lines.append(f"- medvision commit `{git['commit']}`{dirty}")
    text = "## Training recipe\n\n" + "\n".join(lines)
    if facts.config_text:
        text += (
            "\n\n<details><summary>The resolved config (config.yaml)</summary>\n\n```yaml\n"
            f"{facts.config_text.rstrip()}\n```\n\n</details>"
        )
    return text


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def evaluation(record: Preprocessing, facts) -> str:
    """The newest test's metrics with their 95% intervals, per class, and calibration.

    Args:
        record: The preprocessing record.
        facts: The run's facts.
    """
    parts = []
    if facts.summary:
        headline = [row for row in facts.summary if "/" not in row["metric"]]
        parts.append(
            f"`medvision test` on the test split (`{facts.test.name}/test_summary.csv`): each "
            "metric on all `n` test images with its 95% percentile bootstrap interval over "
            "the images."
        )
        parts.append(table(["metric", "value", "95% interval", "n"], map(_summary_row, headline)))
        if record.task == "segmentation":
            parts.append(
                "HD95 (95th percentile Hausdorff distance) is in pixels at the network's input "
                "size, or in mm where the test images carry their spacing (volumes); surface "
                "Dice at the model's tolerance."
            )
        parts.append(_per_class(facts))
    calibration = facts.calibration
    if calibration:
        parts.append(
            f"Temperature scaling on {calibration['num_images']} validation images: T = "
            f"{calibration['temperature']:.4g}; ECE {number(calibration['val_ece_before'])} "
            f"before, {number(calibration['val_ece_after'])} after; NLL "
            f"{number(calibration['val_nll_before'])} before, "
            f"{number(calibration['val_nll_after'])} after."
        )
    parts = [part for part in parts if part]
    return "## Evaluation\n\n" + "\n\n".join(parts) if parts else ""


def _summary_row(row: dict) -> list[str]:
    interval = f"[{number(row['ci_low'])}, {number(row['ci_high'])}]"
    count = "-" if row["n"] is None else str(int(row["n"]))
    return [row["metric"], number(row["value"]), interval, count]


def _per_class(facts) -> str:
    if facts.per_class:
        header = list(facts.per_class[0])
        rows = [[_cell(row[key]) for key in header] for row in facts.per_class]
        return "Per class:\n\n" + table(header, rows)
    by_class = [row for row in facts.summary if "/" in row["metric"]]
    if not by_class:
        return ""
    rows = [[*row["metric"].split("/", 1)[::-1], *_summary_row(row)[1:3]] for row in by_class]
    return "Per class:\n\n" + table(["class", "metric", "value", "95% interval"], rows)


def _cell(text: str) -> str:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return text
    return text if value.is_integer() and "." not in text else number(value)


def figures(facts) -> str:
    """The figures copied beside the card.

    Args:
        facts: The run's facts.
    """
    if not facts.figures:
        return ""
    shown = [
        f"![{caption}](figures/{name})\n\n*{caption}*"
        for name, (_, caption) in facts.figures.items()
    ]
    return "## Figures\n\n" + "\n\n".join(shown)


def limitations(record: Preprocessing, facts) -> str:
    """What the model was not tested on, its sizes, a smoke run, synthetic data.

    Args:
        record: The preprocessing record.
        facts: The run's facts.
    """
    data = facts.info.get("data") or {}
    splits, lines = data.get("splits") or {}, []
    tested = next((row["n"] for row in facts.summary if row["n"] is not None), None)
    if tested is None:
        where = "the run holds no test results" if facts.run else "it lies outside a run folder"
        lines.append(f"Not tested: this card knows of no test of the model ({where}).")
    else:
        source = (data_layout(facts) or "its data").rsplit(".", 1)[-1]
        lines.append(
            f"Tested only on {int(tested)} images of the test split of {source}: not on images "
            "from other sites, scanners, protocols or populations."
        )
        held = (splits.get("test") or {}).get("images")
        if held is not None and tested < held:
            lines.append(f"The test used {int(tested)} of the {held} test images (limited).")
    height, width = record.image_size
    trained = (splits.get("train") or {}).get("images")
    on = f"; trained on {trained} images" if trained is not None else ""
    lines.append(f"Sees every image at {height} x {width} pixels{on}.")
    if smoke_run(facts):
        fit = facts.info["fit"]
        used, available = fit.get("train_batches_per_epoch"), fit.get("train_batches_available")
        lines.append(
            f"**Smoke run**: {_count(fit['epochs'], 'epoch')} on {used} of {available} training "
            "batches per epoch: its figures show that the pipeline runs, not what the model can "
            "do."
        )
    if "synthetic" in (data_layout(facts) or "").lower():
        lines.append("Trained on synthetic images (medvision's phantoms), not on patients' images.")
    if record.task == "classification" and record.temperature == 1:
        lines.append("Probabilities are not calibrated (temperature 1).")
    lines.append("No clinical validation: the evaluation above is all the testing recorded here.")
    return "## Limitations\n\n" + "\n".join(f"- {line}" for line in lines)


def how_to_run(record: Preprocessing, config: dict, name: str) -> str:
    """The command line, Python and (with model.onnx) onnxruntime.

    Args:
        record: The preprocessing record.
        config: The bundle's config.json.
        name: The bundle's folder name.
    """
    onnx = "onnx" in config
    cli = f"medvision predict --ckpt_path {name} --data.predict_dir IMAGES"
    lines = [cli, *([f"{cli} --runtime onnx"] if onnx else [])]
    result = "result.mask" if record.task == "segmentation" else "result.label"
    text = (
        "## How to run it\n\n`pip install medvision-lightning` (with `[export]` for "
        f"onnxruntime). `{name}` is this folder, or its Hugging Face Hub repo id once in the "
        "local cache.\n\n```bash\n" + "\n".join(lines) + "\n```\n\n```python\nimport medvision\n\n"
        f'model = medvision.load_model("{name}")'
        + ('  # runtime="onnx": model.onnx' if onnx else "")
        + f'\nresult = model.predict("image.png")\nprint({result})\n```'
    )
    if onnx:
        channels, (height, width) = record.in_channels, record.image_size
        text += (
            "\n\nWith onnxruntime alone: `image` is float32 N x "
            f"{channels} x {height} x {width} in [0, 1], prepared as config.json's "
            "`preprocessing` says (medvision's docs/apply.md lists the steps); the output is "
            "`probabilities`.\n\n```python\nimport json\n\nimport numpy as np\nimport "
            f'onnxruntime\n\nrecord = json.load(open("{name}/config.json"))["preprocessing"]\n'
            f'session = onnxruntime.InferenceSession("{name}/model.onnx")\n'
            f"batch = np.zeros((1, {channels}, {height}, {width}), np.float32)  # your images\n"
            'probabilities = session.run(["probabilities"], {"image": batch})[0]\n```'
        )
    return text
