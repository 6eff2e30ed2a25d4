"""A bundle's model card: ``README.md`` in the Hugging Face form, and ``figures/`` beside it.

The front matter (YAML between ``---`` lines) holds what the Hub reads: ``library_name:
medvision``, ``tags``, ``pipeline_tag``, ``metrics`` and a ``model-index`` of the test
results, and under ``medvision`` the test summary with its intervals. The sections: intended
use and modality; training data; training recipe; evaluation; figures; limitations; how to
run it.

Everything comes from the record and from the checkpoint's run folder (when it lies in one):
``config.yaml`` (the resolved config), ``run_info.json`` (versions, hardware, the data's splits
and fingerprint, the fit's epochs and duration), ``calibration.json``, the newest test
(:func:`medvision.utils.runs.newest_test_folder`: ``test_summary.csv``, ``test_per_class.csv``
or ``test_per_label.csv``, its figures) and the validation overlays. A field without data is
left out, never guessed.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from medvision.apply.model_card_sections import (
    data_layout,
    evaluation,
    figures,
    how_to_run,
    intended_use,
    limitations,
    smoke_run,
    training_data,
    training_recipe,
)
from medvision.models.record import Preprocessing
from medvision.utils.files import read_csv, write_text
from medvision.utils.runs import checkpoint_run_folder, newest_test_folder

CARD = "README.md"
FIGURES = "figures"
PIPELINE_TAGS = {"segmentation": "image-segmentation", "classification": "image-classification"}
#: Figures copied from the newest test folder: file -> (name in figures/, caption).
TEST_FIGURES = {
    "test_reliability.png": ("reliability.png", "Reliability diagram of the test split"),
    "test_confusion_matrix.png": ("confusion_matrix.png", "Confusion matrix of the test split"),
}


@dataclass
class RunFacts:
    """What a checkpoint's run folder records (all empty for a checkpoint outside one).

    Args:
        run: The run folder, or None.
        config_text: Its ``config.yaml``.
        info: Its ``run_info.json``.
        test: The newest test folder.
        summary: ``test_summary.csv`` rows (``metric``, ``value``, ``ci_low``, ``ci_high``,
            ``n``), numbers as floats.
        per_class: ``test_per_class.csv`` (or ``test_per_label.csv``) rows, as written.
        calibration: The checkpoint's entry of ``calibration.json``.
        figures: Name in ``figures/`` -> (source file, caption).
    """

    run: Path | None = None
    config_text: str | None = None
    info: dict = field(default_factory=dict)
    test: Path | None = None
    summary: list[dict] = field(default_factory=list)
    per_class: list[dict] = field(default_factory=list)
    calibration: dict | None = None
    figures: dict[str, tuple[Path, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, checkpoint: str | Path | None) -> RunFacts:
        """The facts of the run folder ``checkpoint`` lies in.

        Args:
            checkpoint: A checkpoint file (``<run>/checkpoints/best.ckpt``), or None.
        """
        run = None if checkpoint is None else checkpoint_run_folder(checkpoint)
        if run is None or not run.is_dir():
            return cls()
        facts = cls(run=run, info=_json(run / "run_info.json") or {})
        if (run / "config.yaml").is_file():
            facts.config_text = (run / "config.yaml").read_text()
        calibration = _json(run / "calibration.json") or {}
        facts.calibration = calibration.get(Path(checkpoint).name)
        facts.test = newest_test_folder(run)
        if facts.test is not None:
            facts.summary = [_numbers(row) for row in read_csv(facts.test / "test_summary.csv")]
            for name in ("test_per_class.csv", "test_per_label.csv"):
                if (facts.test / name).is_file():
                    facts.per_class = read_csv(facts.test / name)
                    break
            for source, (name, caption) in TEST_FIGURES.items():
                if (facts.test / source).is_file():
                    facts.figures[name] = (facts.test / source, caption)
        overlays = sorted((run / "overlays").glob("*.png")) if (run / "overlays").is_dir() else []
        if overlays:
            caption = f"Validation images: image, truth, prediction ({overlays[-1].stem})"
            facts.figures["overlays.png"] = (overlays[-1], caption)
        if (run / "learning_curves.png").is_file():
            facts.figures["learning_curves.png"] = (run / "learning_curves.png", "Learning curves")
        return facts


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _numbers(row: dict) -> dict:
    def number(text: str | None) -> float | None:
        return float(text) if text not in ("", None) else None

    numbers = {key: number(row.get(key)) for key in ("value", "ci_low", "ci_high")}
    count = number(row.get("n"))
    return {"metric": row["metric"], **numbers, "n": None if count is None else int(count)}


def write_model_card(folder: Path, config: dict, checkpoint: str | Path | None, name: str) -> None:
    """Write ``README.md`` and ``figures/`` into a bundle folder.

    Args:
        folder: The bundle folder (being written).
        config: The bundle's config.json.
        checkpoint: The checkpoint the bundle came from (its run folder is read), or None.
        name: The bundle's name (its folder's), the card's title.
    """
    record = Preprocessing.from_dict(config["preprocessing"])
    facts = RunFacts.of(checkpoint)
    for figure, (source, _) in facts.figures.items():
        (folder / FIGURES).mkdir(exist_ok=True)
        shutil.copyfile(source, folder / FIGURES / figure)
    matter = yaml.safe_dump(front_matter(record, config, facts, name), sort_keys=False)
    body = "\n\n".join(part for part in sections(record, config, facts, name) if part)
    write_text(folder / CARD, f"---\n{matter}---\n\n{body}\n")


def front_matter(record: Preprocessing, config: dict, facts: RunFacts, name: str) -> dict:
    """The card's YAML front matter, in the Hugging Face model-card form.

    Args:
        record: The preprocessing record.
        config: The bundle's config.json.
        facts: The run's facts.
        name: The bundle's name.
    """
    task = PIPELINE_TAGS[record.task]
    tags = ["medvision", "medical-imaging", task, "safetensors"]
    tags += ["onnx"] if "onnx" in config else []
    matter: dict = {"library_name": "medvision", "tags": tags, "pipeline_tag": task}
    headline = [row for row in facts.summary if "/" not in row["metric"]]
    if headline:
        matter["metrics"] = [row["metric"] for row in headline]
        dataset = data_layout(facts) or "test split"
        metrics = [
            {"type": row["metric"], "value": row["value"], "name": f"{row['metric']} (test)"}
            for row in headline
        ]
        results = {
            "task": {"type": task},
            "dataset": {"name": dataset.rsplit(".", 1)[-1], "type": dataset, "split": "test"},
            "metrics": metrics,
        }
        matter["model-index"] = [{"name": name, "results": [results]}]
    own: dict = {"version": config.get("medvision_version"), "task": record.task}
    if facts.summary:
        own["test"] = {"folder": facts.test.name, "level": 0.95, "summary": facts.summary}
    if smoke_run(facts):
        own["smoke_run"] = True
    matter["medvision"] = own
    return matter


def sections(record: Preprocessing, config: dict, facts: RunFacts, name: str) -> list[str]:
    """The card's Markdown sections, in order (empty strings for sections without data).

    Args:
        record: The preprocessing record.
        config: The bundle's config.json.
        facts: The run's facts.
        name: The bundle's name.
    """
    network = config["network"]["init_args"]
    architecture = network.get("arch") or network.get("model_name") or "a network"
    encoder = f" ({network['encoder_name']} encoder)" if network.get("encoder_name") else ""
    title = f"# {name}\n\nA medvision {record.task} model: {architecture}{encoder}."
    if smoke_run(facts):
        title += "\n\n**Smoke run**: trained on reduced data (see Limitations)."
    return [
        title,
        intended_use(record),
        training_data(record, facts),
        training_recipe(facts),
        evaluation(record, facts),
        figures(facts),
        limitations(record, facts),
        how_to_run(record, config, name),
    ]
