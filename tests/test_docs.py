"""Every command in the README, docs/ and notebooks/README.md is run or checked: none goes stale.

Commands come from fenced ``bash`` blocks (and ``python ...`` / ``medvision ...`` lines of
unlabelled blocks, where the benchmark scripts print their command lines); ``python`` blocks run
as code. Each command is handled by what it starts:

- ``medvision fit|validate|test|predict``: run in-process on tiny synthetic data in the
  documented layouts, from a workspace folder that looks like a checkout (``configs/``, and the
  configs' default data folders ``data/lung_ct``, ... holding synthetic data). Placeholders are
  filled in (``/path/to/<dataset>``, ``../shared/data/<dataset>``, ``CKPT``, ``DIR``, ``RUN``,
  ``OUT``, ``MASKS``) and quick-run overrides appended (CPU, ``fast_dev_run``: one batch per
  stage, 32 px, a small network, outputs in the test's folder); the stage must log its metrics
  (``predict``: write its files). ``--ckpt_path`` gets the best checkpoint of a one-epoch fit of
  the same model, made once; ``runs/<config>/version_0`` and ``runs/<config>/cv`` are made
  from ``configs/<config>.yaml`` where the path points. ``--print_config`` / ``--help`` must
  print and exit.
- ``medvision-cv`` (2 folds), ``medvision-report``: likewise, once ``medvision.cli.crossval`` /
  ``medvision.cli.compare`` exist (skipped, naming the missing module, until then). A report's runs
  are made by the documented command whose ``--output`` they are, if not yet there.
- ``medvision tune``: two one-epoch trials of the documented search in the test's folder (a
  ``--storage`` database URL is left out; ``--summary`` summarizes such a study).
- ``python benchmarks/X.py ...``: the documented flags must parse with the script's
  ``build_parser()`` (the benchmarks take minutes to hours on real data). ``bash
  benchmarks/X.sh ...``: the script parses (``bash -n``) and takes every documented ``--flag``.
- ``pip install ...`` and ``pytest ...``: must be what CI runs (the README's ci:install and ci:test
  blocks, which ``.ci/run`` executes) or a subset of that test run (``-m <marker>``, test files);
  an optional interactive tool (:data:`OPTIONAL_TOOLS`) needs the test that covers its use.
- ``torchrun``, ``srun``, ``sbatch``: the launcher's own flags parse (torchrun's parser) and the
  ``medvision`` command inside parses (``--print_config``); ``sbatch FILE`` must name a script
  shown on the same page (a block with a ``# file: FILE`` line). ``jupyter lab FOLDER``: the
  folder holds notebooks, and ``tests/test_notebooks.py`` executes them.

Any other command fails the test: a new instruction needs a handler here before it can ship.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import io
import itertools
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import ArgumentError

import medvision.cli
import medvision.cli.commands
from medvision.data.synthetic import (
    write_chest_xray,
    write_chexpert,
    write_ham10000,
    write_lung_ct,
    write_nih_chestxray14,
)
from medvision.data.synthetic_volumes import write_nifti_volumes

from .conftest import CONFIGS, REPO
from .conftest import load_benchmark as load_script

CLI = medvision.cli.MedVisionCLI  # kept: run_python_block patches the module's name

DOC_FILES = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "notebooks" / "README.md",
]
MEDVISION_SUBCOMMANDS = ("fit", "validate", "test", "predict", "export")
#: the config whose checkpoint a command without ``--config`` gets for ``--ckpt_path CKPT``
#: (``predict`` from the checkpoint alone, ``export``), unless it names a run's checkpoint
CHECKPOINT_ONLY_CONFIG = "unet_lung"
#: console scripts built by other modules: command -> the module that implements it
MODULE_COMMANDS = {
    "medvision-cv": "medvision.cli.crossval",
    "medvision-report": "medvision.cli.compare",
}
#: a command line in an unlabelled block (the benchmarks print theirs there, beside their output)
COMMAND_LINE = re.compile(r"\s*(python \S+\.py\b|python -m \S|medvision(-[a-z]+)? [a-z]+\b)")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)\s*$")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*[A-Z0-9]$")  # IMG_ is a value (a name prefix)
#: where documented commands point at a dataset: /path/to/<name>, ../shared/data/<name>, ...
DATA_PATH = re.compile(r"(?:/path/to|(?:\.\./|/work/)shared/data)/([\w.-]+)")
#: a file of a shipped config's first run (a checkpoint, its config.yaml), where it writes it
RUN_CHECKPOINT = re.compile(r"runs/([\w.-]+)/version_0\b")
#: a cross-validation folder of a shipped config (``medvision-cv``'s default output)
RUN_CV = re.compile(r"runs/([\w.-]+)/cv\b")
#: options after which medvision prints and exits instead of running
PRINT_AND_EXIT = ("--print_config", "--help", "-h", "--model.help", "--data.help")


# --- extraction -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DocCommand:
    """One documented command (``kind`` ``bash``) or code block (``kind`` ``python``)."""

    page: Path
    line: int
    kind: str
    text: str
    script_names: tuple[str, ...] = ()  # ``# file: NAME`` scripts shown on the same page

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def fenced_blocks(text: str) -> Iterator[tuple[str, int, list[str]]]:
    """``(language, line number of its first line, dedented lines)`` of every fenced block."""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        index += 1
        if not opening:
            continue
        indent, fence, language = opening.groups()
        first, body = index + 1, []
        while index < len(lines) and lines[index].strip() != fence:
            line = lines[index]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            index += 1
        yield language.lower(), first, body
        index += 1


def logical_lines(lines: list[str], first: int) -> Iterator[tuple[int, str]]:
    """Lines with their ``\\`` continuations joined, numbered by where each starts."""
    pending, start = "", first
    for number, line in enumerate(lines, first):
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield start, pending + line
        pending = ""
    if pending:
        yield start, pending


def page_commands(page: Path) -> list[DocCommand]:
    """The commands of every bash block, command lines of unlabelled blocks, python blocks."""
    text = page.read_text()
    scripts = tuple(re.findall(r"^\s*# file: (\S+)\s*$", text, re.M))
    found = []
    for language, first, body in fenced_blocks(text):
        if language == "python":
            found.append(DocCommand(page, first, "python", "\n".join(body)))
            continue
        if language not in ("bash", "sh", "shell", ""):
            continue
        for number, line in logical_lines(body, first):
            if language == "" and not COMMAND_LINE.match(line):
                continue  # output printed beside a command line
            tokens = shlex.split(line, comments=True)
            for command in split_on(tokens, "&&"):
                found.append(DocCommand(page, number, "bash", shlex.join(command), scripts))
    return found


def split_on(tokens: list[str], separator: str) -> list[list[str]]:
    """``a b && c`` -> ``[[a, b], [c]]``; empty parts dropped."""
    parts: list[list[str]] = [[]]
    for token in tokens:
        if token == separator:
            parts.append([])
        else:
            parts[-1].append(token)
    return [part for part in parts if part]


def documented_commands() -> list[DocCommand]:
    """Every command of :data:`DOC_FILES`, one per distinct text (the first place it appears)."""
    unique: dict[tuple[str, str], DocCommand] = {}
    for page in DOC_FILES:
        for command in page_commands(page):
            unique.setdefault((command.kind, command.text), command)
    return list(unique.values())


def readme_ci_commands() -> dict[str, list[str]]:
    """The first line of the bash block after ``<!-- ci:install -->`` / ``<!-- ci:test -->``.

    Read the way ``.ci/run`` reads it; each split on ``&&`` into single commands.
    """
    lines = (REPO / "README.md").read_text().splitlines()
    found = {}
    for marker in ("ci:install", "ci:test"):
        start = lines.index(f"<!-- {marker} -->")
        fence = next(i for i in range(start, len(lines)) if lines[i].startswith("```bash"))
        tokens = shlex.split(lines[fence + 1])
        found[marker] = [shlex.join(part) for part in split_on(tokens, "&&")]
    return found


COMMANDS = documented_commands()


# --- the synthetic workspace -----------------------------------------------------------------


#: dataset kind -> (folder under the workspace's data/, how to write it there)
DATASETS: dict[str, tuple[str, Callable[[Path], object]]] = {
    "lung": ("lung_ct", lambda root: write_kaggle_lungs(root)),
    "volumes": (
        "Task09_Spleen",
        lambda root: write_nifti_volumes(
            root, 4, (32, 32, 8), image_dirname="imagesTr", mask_dirname="labelsTr"
        ),
    ),
    "chest": ("chest_xray", lambda root: write_chest_xray(root, scale=0.5, size=48, seed=0)),
    "ham": ("ham10000", lambda root: write_ham10000(root, num_lesions=32, size=(48, 64), seed=0)),
    "nih": ("nih_chestxray14", lambda root: write_nih_chestxray14(root, num_patients=24, seed=0)),
    "chexpert": ("CheXpert-v1.0-small", lambda root: write_chexpert(root.parent, 24, seed=0)),
}
#: datamodule class name -> dataset kind (None: it writes its own synthetic data)
DATA_KINDS = {
    "VolumeSliceDataModule": "volumes",
    "SyntheticVolumeSliceDataModule": None,
    "SyntheticDicomChestXrayDataModule": None,
    "SyntheticDicomSegDataModule": None,
    "LungCTDataModule": "lung",
    "SyntheticLungCTDataModule": None,
    "SyntheticMultiClassDataModule": None,
    "ChestXrayDataModule": "chest",
    "SyntheticChestXrayDataModule": None,
    "HAM10000DataModule": "ham",
    "HAM10000LesionCropDataModule": "ham",
    "ImageFolderPredictDataModule": None,
    "NIHChestXray14DataModule": "nih",
    "CheXpertDataModule": "chexpert",
}
#: a folder of images to predict on, per dataset kind (relative to its data folder)
PREDICT_FOLDERS = {
    "volumes": "imagesTr",
    "lung": "2d_images",
    "chest": "test",
    "ham": "images",
    "nih": "images",
    "chexpert": "valid",
}
#: networks swapped for a small one (the command's config and subcommand still run)
SMALL_ENCODER = "resnet18"
LARGE_NETS = {"resnet34", "resnet50", "resnet101", "densenet121"}
#: every run: on the CPU, in float32 (mixed precision on a CPU only adds time), quietly
QUICK_TRAINER = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.precision=32-true",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.log_every_n_steps=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
#: a documented command: one batch of each stage, no checkpoint or logger files
FAST_RUN = ["--trainer.fast_dev_run=1"]
#: a run whose checkpoint and run folder later commands use: one epoch, each split one batch
#: (``--trainer.limit_*_batches=1`` would not do: the CLI parses 1 as the fraction 1.0)
FULL_RUN = ["--trainer.max_epochs=1"]


def write_kaggle_lungs(root: Path) -> None:
    """The Kaggle lung folder: 2D slices (``2d_images``, ``2d_masks``) and 3D volumes
    (``3d_images/IMG_*.nii.gz`` with ``MASK_*.nii.gz``)."""
    write_lung_ct(root, num_slices=20, size=64, seed=0)
    write_nifti_volumes(
        root,
        3,
        (32, 32, 8),
        image_dirname="3d_images",
        mask_dirname="3d_images",
        image_prefix="IMG_",
        mask_prefix="MASK_",
    )


def dataset_kind(name: str) -> str:
    """The dataset a documented folder name stands for (``finding-lungs-in-ct-data`` -> lung)."""
    lowered = name.lower()
    for keyword, kind in (
        ("task", "volumes"),  # a Decathlon task folder, Task06_Lung too
        ("lung", "lung"),
        ("chest_xray", "chest"),
        ("chestxray14", "nih"),
        ("nih", "nih"),
        ("ham", "ham"),
        ("chexpert", "chexpert"),
    ):
        if keyword in lowered:
            return kind
    raise AssertionError(f"no synthetic stand-in for the data folder {name!r}; add it to DATASETS")


@dataclass
class Workspace:
    """A folder that looks like a user's checkout: ``configs/``, data in ``data/``, ``runs/``."""

    root: Path
    data: dict[str, Path] = field(default_factory=dict)
    fits: dict[tuple[str, ...], Path] = field(default_factory=dict)  # model key -> fit's root
    bundles: dict[Path, Path] = field(default_factory=dict)  # checkpoint -> its bundle

    @classmethod
    def create(cls, root: Path) -> Workspace:
        (root / "configs").symlink_to(REPO / "configs")
        workspace = cls(root)
        for kind, (folder, write) in DATASETS.items():
            path = root / "data" / folder
            write(path)
            workspace.data[kind] = path
        return workspace

    # --- substitution --------------------------------------------------------------------

    def substitute(self, subcommand: str, args: list[str], out: Path) -> tuple[list[str], dict]:
        """Documented arguments with data paths, placeholders and checkpoints filled in.

        Returns them with the config their YAML files compose (see :meth:`introspect`).
        """
        without = strip_option(args, "--ckpt_path")
        config = self.introspect([subcommand, *without])
        kind = self.data_kind(config)
        filled = [self.fill(arg, kind, out) for arg in without]
        if len(without) < len(args):  # a --ckpt_path: the checkpoint fit makes of this command
            resume = option_value(args, "--ckpt_path") == "last"  # the run's newest last.ckpt
            filled.append(f"--ckpt_path={'last' if resume else self.checkpoint_of(filled)}")
        return filled, config

    def fill(self, arg: str, kind: str | None, out: Path) -> str:
        """One argument (or the value of ``--key=value``) with its placeholders filled in."""
        key, equals, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        if value == "...":
            raise AssertionError("'...' leaves arguments out: write the command in full")
        value = DATA_PATH.sub(lambda m: self.data_path(m.group(1), kind), value)
        for name, real in self.placeholders(out).items():
            if re.search(rf"\b{name}\b", value):
                value = re.sub(rf"\b{name}\b", str(real(kind)), value)
        if PLACEHOLDER.match(value):
            raise AssertionError(f"unknown placeholder {value!r}: add it to placeholders()")
        self.ensure_named_runs(value)
        return f"{key}{equals}{value}" if key else value

    def placeholders(self, out: Path) -> dict[str, Callable[[str | None], Path]]:
        """Placeholder -> what it stands for, given the command's dataset kind."""
        return {
            "DIR": self.predict_folder,
            "MASKS": lambda kind: self.data["lung"] / "2d_masks",
            "RUN": lambda kind: out,
            "OUT": lambda kind: out / "out",
        }

    def data_path(self, name: str, kind: str | None) -> str:
        if name in ("images", "slices"):  # /path/to/images: new images to predict on
            return str(self.predict_folder(kind))
        return str(self.data[dataset_kind(name)])

    def predict_folder(self, kind: str | None) -> Path:
        assert kind is not None, "DIR needs a command whose data is one of DATASETS"
        return self.data[kind] / PREDICT_FOLDERS[kind]

    # --- configs -------------------------------------------------------------------------

    def introspect(self, args: list[str]) -> dict:
        """The config files that ``args`` compose, merged; the runs they name are made first.

        Read from the YAML files (a ``--print_config`` would cost a second of parsing per
        command); it only decides which quick-run overrides apply. The run itself is parsed by
        medvision, which fails on any key that does not exist.
        """
        for arg in args:  # e.g. --config runs/<config>/version_0/config.yaml
            self.ensure_named_runs(arg)
        config = composed_config(args)
        self.ensure_named_runs(json.dumps(config))  # e.g. a classifier_checkpoint default
        return config

    def ensure_named_runs(self, text: str) -> None:
        """Make the ``runs/<config>/version_0`` and ``runs/<config>/cv`` ``text`` names."""
        for match in RUN_CHECKPOINT.finditer(text):
            self.ensure_run(match.group(1))
        for match in RUN_CV.finditer(text):
            self.ensure_cv(match.group(1))

    @staticmethod
    def data_kind(config: dict) -> str | None:
        block = config["data"]
        while "data" in block.get("init_args", {}):  # FeatureDataModule wraps an image one
            block = block["init_args"]["data"]
        name = block["class_path"].rsplit(".", 1)[-1]
        assert name in DATA_KINDS, f"no synthetic data for {name}: add it to DATA_KINDS"
        return DATA_KINDS[name]

    # --- runs ----------------------------------------------------------------------------

    def quick_args(self, config: dict, out: Path | None, full: bool = False) -> list[str]:
        """Overrides that make the composed ``config`` run quickly on the CPU, into ``out``.

        ``full``: a real (one-epoch) run that writes checkpoints and logs; otherwise Lightning's
        ``fast_dev_run``, one small batch per stage and nothing written but predictions.
        """
        args = [*QUICK_TRAINER, *(FULL_RUN if full else FAST_RUN)]
        if config["trainer"].get("sync_batchnorm"):
            args.append("--trainer.sync_batchnorm=false")  # SyncBatchNorm needs GPUs
        model = config["model"].get("init_args", {})
        for key in ("encoder_name", "model_name"):
            if model.get(key) in LARGE_NETS:
                args.append(f"--model.init_args.{key}={SMALL_ENCODER}")
        args += shrink_data(config["data"], "--data.init_args", batch_size=64 if full else 8)
        if out is not None:
            args.append(f"--trainer.default_root_dir={out}")
            logger = config["trainer"].get("logger")
            if isinstance(logger, dict) and "save_dir" in logger.get("init_args", {}):
                args.append(f"--trainer.logger.init_args.save_dir={out}")
        return args

    def run(
        self, subcommand: str, args: list[str], out: Path, config: dict | None = None, full=False
    ) -> CLI:
        """``medvision <subcommand> args`` made quick (see :meth:`quick_args`), into ``out``.

        A full fit's folder is remembered as the model of its config files and ``--model``
        arguments, for later commands that need a checkpoint of that model.
        """
        config = config or self.introspect([subcommand, *args])
        cli = CLI(args=[subcommand, *args, *self.quick_args(config, out, full)])
        if "WandbLogger" in str(config["trainer"].get("logger")):
            import wandb

            wandb.finish()
        if full and subcommand == "fit":
            self.fits.setdefault(model_key(args), out)
        return cli

    def checkpoint_of(self, args: list[str]) -> Path:
        """The best checkpoint of a full fit of the same model (an earlier one, or made now)."""
        key = model_key(args)
        if key not in self.fits:
            root = self.root / "fits" / hashlib.sha1(repr(key).encode()).hexdigest()[:10]
            self.run("fit", strip_option(args, lambda name: "predict" in name), root, full=True)
            for checkpoint in root.rglob("*.ckpt"):  # the disk: only best.ckpt is used
                if checkpoint.name != "best.ckpt":
                    checkpoint.unlink()
        return find_checkpoint(self.fits[key])

    def bundle_of(self, checkpoint: Path) -> Path:
        """The bundle (with model.onnx) of ``checkpoint``, exported once."""
        if checkpoint not in self.bundles:
            bundle = self.root / "bundles" / hashlib.sha1(str(checkpoint).encode()).hexdigest()[:10]
            pytest.importorskip("onnxscript", reason="ONNX export needs the export extra")
            medvision.cli.main(
                [
                    "export",
                    f"--ckpt_path={checkpoint}",
                    "--format=bundle",
                    "--onnx",
                    f"--output={bundle}",
                ]
            )
            self.bundles[checkpoint] = bundle
        return self.bundles[checkpoint]

    def ensure_run(self, config_name: str) -> None:
        """Make ``runs/<config_name>/version_0/`` (``best.ckpt``, ``config.yaml``, ...).

        It is the run folder of a fit of ``configs/<config_name>.yaml`` (an earlier one, or one
        made now), as if the config had been run from the workspace.
        """
        version_0 = self.root / "runs" / config_name / "version_0"
        if version_0.exists():
            return
        config_file = REPO / "configs" / f"{config_name}.yaml"
        assert config_file.exists(), f"runs/{config_name}: no configs/{config_name}.yaml made it"
        version_0.parent.mkdir(parents=True)
        version_0.symlink_to(self.checkpoint_of(["--config", str(config_file)]).parents[1])

    def ensure_cv(self, config_name: str) -> None:
        """Make ``runs/<config_name>/cv`` with ``medvision-cv`` (2 folds) on its config."""
        if (self.root / "runs" / config_name / "cv").exists():
            return
        args = ["--config", str(REPO / "configs" / f"{config_name}.yaml")]
        config = self.introspect(["fit", *args])
        quick = self.quick_args(config, None, full=True)
        run_module("medvision-cv", ["--folds", "2", *args, *quick])

    def ensure_documented_output(self, path: str) -> None:
        """Make ``path`` by running the documented command whose ``--output`` it is, if absent."""
        if (self.root / path).exists():
            return
        makers = [
            c
            for c in COMMANDS
            if c.kind == "bash" and option_value(shlex.split(c.text), "--output") == path
        ]
        assert makers, f"{path}: no documented command writes it (--output {path})"
        tokens = shlex.split(makers[0].text)
        out = self.root / "out" / hashlib.sha1(makers[0].text.encode()).hexdigest()[:10]
        out.mkdir(parents=True, exist_ok=True)
        HANDLERS[tokens[0]](tokens, makers[0], self, out)


def composed_config(args: list[str]) -> dict:
    """The ``--config`` files of ``args`` merged in order (``--data FILE`` as the data block)."""
    config: dict = {}
    for name, value in option_pairs(args):
        if name == "--config":
            merge(config, load_config(Path(value)))
        elif name == "--data" and Path(value).is_file():
            config["data"] = load_config(Path(value))
    for section in ("model", "data", "trainer"):
        config.setdefault(section, {})
    return config


def load_config(path: Path) -> dict:
    """A YAML config with the fragment files it names as values (``data: x.yaml``) read in."""
    loaded = yaml.safe_load(path.read_text()) or {}

    def resolve(node):
        if isinstance(node, dict):
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, str) and node.endswith(".yaml") and (path.parent / node).is_file():
            return load_config(path.parent / node)
        return node

    return resolve(loaded)


def merge(base: dict, update: dict) -> None:
    """``update`` into ``base``, key by key (lists and values replaced), as configs compose."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value


def option_pairs(args: list[str]) -> Iterator[tuple[str, str]]:
    """``(--name, value)`` of every ``--name value`` / ``--name=value`` in ``args``."""
    for index, arg in enumerate(args):
        name, equals, value = arg.partition("=")
        if not name.startswith("--"):
            continue
        if equals:
            yield name, value
        elif index + 1 < len(args) and not args[index + 1].startswith("--"):
            yield name, args[index + 1]


def model_key(args: list[str]) -> tuple[str, ...]:
    """What decides the model a fit makes: its config files and ``--model...`` arguments."""
    key = []
    for name, value in option_pairs(args):
        if name in ("--config", "--data") or name.startswith("--model."):
            is_file = name in ("--config", "--data") and Path(value).is_file()
            key.append(f"{name}={Path(value).resolve() if is_file else value}")
    return tuple(key)


def shrink_data(block: dict, prefix: str, batch_size: int, image_size: int = 32) -> list[str]:
    """Overrides for a datamodule block (and the one it wraps): small images and data.

    Images wrapped by ``FeatureDataModule`` stay at 64 px, so that the extractor's feature map
    is more than one pixel.
    """
    init = block.get("init_args", {})
    args = [f"{prefix}.num_workers=0"]
    small = {"batch_size": batch_size, "image_size": image_size, "num_slices": 20, "scale": 0.5}
    args += [f"{prefix}.{key}={value}" for key, value in small.items() if key in init]
    if isinstance(init.get("data"), dict):
        inner = f"{prefix}.data.init_args"
        args += shrink_data(init["data"], inner, batch_size, image_size=64)
    return args


def strip_option(args: list[str], option: str | Callable[[str], bool]) -> list[str]:
    """``args`` without ``--name VALUE`` / ``--name=VALUE`` for the option(s) ``option`` names."""
    matches = option if callable(option) else (lambda name: name == option)
    kept, index = [], 0
    while index < len(args):
        name, equals, _ = args[index].partition("=")
        if not (name.startswith("--") and matches(name)):
            kept.append(args[index])
        elif not equals and index + 1 < len(args) and not args[index + 1].startswith("--"):
            index += 1  # its value
        index += 1
    return kept


def option_value(args: list[str], option: str) -> str | None:
    """The value of ``option VALUE`` / ``option=VALUE`` in ``args`` (the last one), or None."""
    value = None
    for index, arg in enumerate(args):
        if arg == option and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith(f"{option}="):
            value = arg.partition("=")[2]
    return value


def print_config(args: list[str], run: bool = True) -> str:
    """What ``medvision <args> --print_config`` prints; fails with the parser's message."""
    return _printed_config(tuple(args), run)


@functools.cache
def _printed_config(args: tuple[str, ...], run: bool) -> str:
    return exit_output([*args, "--print_config"], run)


def exit_output(args: list[str], run: bool = True) -> str:
    """What ``medvision <args>`` prints when ``args`` make it print and exit (0); else fails."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            CLI(args=args, run=run)
        except ArgumentError as error:  # the CLI raises parse errors (main prints them)
            raise AssertionError(f"medvision {shlex.join(args)}:\n{error}") from None
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                raise AssertionError(
                    f"medvision {shlex.join(args)}:\n{stderr.getvalue()}"
                ) from None
            return stdout.getvalue()
    raise AssertionError(f"medvision {shlex.join(args)} ran instead of printing and exiting")


def find_checkpoint(root: Path) -> Path:
    """The ``best.ckpt`` that a fit wrote under ``root``."""
    found = sorted(root.rglob("best.ckpt"))
    assert len(found) == 1, f"expected one best.ckpt under {root}, found {found}"
    return found[0]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Iterator[Workspace]:
    """The workspace, as the working directory, with W&B kept offline and local.

    Torch computes on one thread here: these tiny runs take a third of the CPU time they take
    on two (on a 2-core machine that others share, the second thread mostly waits).
    """
    root = tmp_path_factory.mktemp("docs_workspace")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(root)
            patch.delenv("WANDB_API_KEY", raising=False)
            patch.setenv("WANDB_MODE", "offline")
            patch.setenv("WANDB_CONFIG_DIR", str(root / "wandb_config"))
            patch.setenv("WANDB_CACHE_DIR", str(root / "wandb_cache"))
            yield Workspace.create(root)
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(root, ignore_errors=True)  # checkpoints: gigabytes


# --- handlers ---------------------------------------------------------------------------------


def run_medvision(tokens: list[str], command: DocCommand, workspace: Workspace, out: Path):
    subcommand, args = tokens[1], tokens[2:]
    if subcommand == "tune":
        return run_tune(tokens, command, workspace, out)
    assert subcommand in MEDVISION_SUBCOMMANDS, f"unknown medvision subcommand {subcommand!r}"
    if any(arg.split("=")[0] in PRINT_AND_EXIT for arg in args):
        assert exit_output([subcommand, *[workspace.fill(a, None, out) for a in args]]).strip()
        return
    configless = option_value(args, "--config") is None
    if subcommand == "export" or (subcommand == "predict" and configless):
        return run_from_checkpoint(subcommand, args, workspace, out)
    filled, config = workspace.substitute(subcommand, args, out)
    if subcommand == "predict" and not has_output(filled):
        filled.append(f"--output={out / 'predictions'}")  # else the checkpoint's run folder
    cli = workspace.run(subcommand, filled, out, config)
    if subcommand == "predict":
        assert [p for p in out.rglob("*") if p.is_file()], f"predict wrote nothing in {out}"
        return
    stage = "test/" if subcommand == "test" else "val/"
    logged = list(cli.trainer.callback_metrics)
    assert any(key.startswith(stage) for key in logged), f"{subcommand} logged no {stage}: {logged}"


def has_output(args: list[str]) -> bool:
    return any(
        option_value(args, name) is not None
        for name in ("--output", "--prediction_writer.output_dir")
    )


def run_from_checkpoint(subcommand: str, args: list[str], workspace: Workspace, out: Path):
    """``medvision predict`` without ``--config``, or ``medvision export``: CKPT is the best
    checkpoint of a fit of the run's config the command names (``runs/<config>/...``), else
    of :data:`CHECKPOINT_ONLY_CONFIG`; DIR holds that config's data. A ``--ckpt_path`` that
    names neither CKPT nor a ``.ckpt`` file is a bundle (a folder or a Hub repo id): that
    checkpoint's bundle. Relative ``--output`` files are written into the command's folder."""
    documented = option_value(args, "--ckpt_path") or ""
    named = RUN_CHECKPOINT.search(documented)
    config_name = named.group(1) if named else CHECKPOINT_ONLY_CONFIG
    config_args = ["--config", str(REPO / "configs" / f"{config_name}.yaml")]
    kind = workspace.data_kind(workspace.introspect(["fit", *config_args]))
    filled = [workspace.fill(a, kind, out) for a in strip_option(args, "--ckpt_path")]
    checkpoint = workspace.checkpoint_of(config_args)
    if documented != "CKPT" and not documented.endswith(".ckpt"):
        checkpoint = workspace.bundle_of(checkpoint)
    filled.append(f"--ckpt_path={checkpoint}")
    if subcommand == "export":
        if option_value(filled, "--format") == "onnx" or "--onnx" in filled:
            pytest.importorskip("onnxscript", reason="ONNX export needs the export extra")
        output = Path(option_value(filled, "--output"))
        if not output.is_absolute():
            output = out / output
            filled = [*strip_option(filled, "--output"), f"--output={output}"]
        medvision.cli.main(["export", *filled])
        if option_value(filled, "--format") == "bundle":
            assert (output / "config.json").is_file() and (output / "README.md").is_file()
            return
        assert output.is_file() and output.with_name(output.name + ".json").is_file()
        return
    if not has_output(filled):
        filled.append(f"--output={out / 'predictions'}")
    CLI(args=["predict", *filled, *QUICK_TRAINER])
    assert [p for p in out.rglob("*") if p.is_file()], f"predict wrote nothing in {out}"


def run_module_command(tokens: list[str], command: DocCommand, workspace: Workspace, out: Path):
    module_name = MODULE_COMMANDS[tokens[0]]
    if importlib.util.find_spec(module_name) is None:
        pytest.skip(f"{tokens[0]}: module {module_name} does not exist yet")
    args = tokens[1:]
    if tokens[0] == "medvision-cv":  # its own options, then medvision fit's
        fit_args = strip_option(args, CV_OPTIONS.__contains__)
        filled, config = workspace.substitute("fit", fit_args, out)
        args = [*cv_options(args), *filled, *workspace.quick_args(config, out, full=True)]
        expected = "cv_summary.csv"
    else:  # medvision-report RUN ...: runs that earlier documented commands make
        args = [workspace.fill(a, None, out) for a in args]
        for arg in itertools.takewhile(lambda a: not a.startswith("-"), args):  # the RUNs
            workspace.ensure_documented_output(arg)
        expected = "report.md"
    run_module(tokens[0], args)
    written = Path(option_value(args, "--output") or out)
    assert list(written.rglob(expected)), f"{tokens[0]} wrote no {expected} in {written}"


#: medvision-cv's own options (the rest go to medvision fit) and their values
CV_OPTIONS = ("--folds", "--seeds", "--output", "--name")
#: medvision tune's own options (the rest go to medvision fit), and those a quick run replaces
TUNE_OPTIONS = (
    *("--search", "--trials", "--timeout", "--study", "--storage", "--output", "--monitor"),
    *("--mode", "--pruner", "--startup-trials", "--warmup-epochs", "--seed"),
)
TUNE_REPLACED = ("--trials", "--timeout", "--storage", "--output")


def run_tune(tokens: list[str], command: DocCommand, workspace: Workspace, out: Path):
    """``medvision tune``: two one-epoch trials of the documented search, the study in ``out``.

    A ``--storage`` database URL is left out (the study goes to the default journal file;
    tests/test_tune.py runs PostgreSQL). ``--summary`` summarizes the study that the page's
    first ``tune --config`` command makes first, under the same ``--study`` name.
    """
    pytest.importorskip("optuna", reason="medvision tune needs the tune extra")
    args = [arg for arg in tokens[2:] if arg != "--summary"]
    kept = own_options(strip_option(args, TUNE_REPLACED.__contains__), TUNE_OPTIONS)
    own = [*kept, "--trials=2", f"--output={out / 'study'}"]
    if "--summary" in tokens:
        first = next(c for c in COMMANDS if c.page == command.page and "tune --config" in c.text)
        made = strip_option(shlex.split(first.text), "--study")
        run_tune([*made, *[o for o in own if o.startswith("--study=")]], command, workspace, out)
        medvision.cli.main(["tune", "--summary", *own])
    else:
        filled, config = workspace.substitute(
            "fit", strip_option(args, TUNE_OPTIONS.__contains__), out
        )
        quick = workspace.quick_args(config, out, full=True)
        medvision.cli.main(["tune", *own, *filled, *quick])
    assert (out / "study" / "trials.csv").is_file(), f"tune wrote no trials.csv in {out}"


def own_options(args: list[str], names: tuple[str, ...]) -> list[str]:
    """The options ``names`` of ``args``, each as ``--name=value``."""
    own, index = [], 0
    while index < len(args):
        name, equals, value = args[index].partition("=")
        if name in names:
            if not equals:
                index += 1
                value = args[index]
            own.append(f"{name}={value}")
        index += 1
    return own


def cv_options(args: list[str]) -> list[str]:
    """medvision-cv's own options from ``args``, with ``--folds`` and ``--seeds`` (a count)
    reduced to 2 (a quick run)."""
    quick = {"--folds", "--seeds"}
    own = [option.partition("=") for option in own_options(args, CV_OPTIONS)]
    return [f"{name}=2" if name in quick else f"{name}={value}" for name, _, value in own]


def run_module(command: str, args: list[str]) -> None:
    """The console script ``command`` in-process: its module's ``main(args)``."""
    importlib.import_module(MODULE_COMMANDS[command]).main(args)


def check_benchmark(tokens: list[str], command: DocCommand, workspace: Workspace, out: Path):
    script = REPO / tokens[1]
    assert script.parent == REPO / "benchmarks" and script.exists(), f"no script {tokens[1]}"
    parser = load_benchmark(script).build_parser()
    try:
        parser.parse_args(tokens[2:])
    except SystemExit:
        raise AssertionError(f"{tokens[1]} does not take {shlex.join(tokens[2:])}") from None


def check_bash(tokens: list[str], command: DocCommand, workspace: Workspace, out: Path):
    """``bash benchmarks/X.sh ...`` (a GPU check): it parses, and names every flag given."""
    script = REPO / tokens[1] if len(tokens) > 1 else REPO
    assert script.parent == REPO / "benchmarks" and script.suffix == ".sh", tokens[1:2]
    assert script.is_file(), f"no script {tokens[1]}"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, f"{tokens[1]}: bash -n"
    text = script.read_text()
    unknown = [arg for arg in tokens[2:] if arg.startswith("-") and f"{arg})" not in text]
    assert not unknown, f"{tokens[1]} does not take {unknown}"


def load_benchmark(script: Path):
    """The benchmark script as a module; it must expose ``build_parser()``."""
    module = load_script(script)
    assert hasattr(module, "build_parser"), f"{script.name} must expose build_parser()"
    return module


def check_python(tokens: list[str], command: DocCommand, workspace: Workspace, out: Path):
    if tokens[1:3] == ["-m", "medvision.cli"]:
        return run_medvision(["medvision", *tokens[3:]], command, workspace, out)
    if tokens[1:3] == ["-m", "pip"]:
        return check_ci_command(tokens[2:], command, workspace, out)
    if tokens[1:3] == ["-m", "pytest"]:
        return check_ci_command(tokens[2:], command, workspace, out)
    if len(tokens) > 1 and tokens[1].startswith("benchmarks/"):
        return check_benchmark(tokens, command, workspace, out)
    raise AssertionError(f"no handler for python {shlex.join(tokens[1:])}")


#: tools that pages tell users to install for interactive use, which CI does not install; each
#: with the test that covers what the tool is used for
OPTIONAL_TOOLS = {"jupyterlab": REPO / "tests" / "test_notebooks.py"}


def check_ci_command(tokens: list[str], command: DocCommand, workspace: Workspace, out: Path):
    ci = readme_ci_commands()
    text = shlex.join(tokens)
    if tokens[0] == "pip":
        if is_cpu_torch_install(tokens):
            return
        if tokens[1:2] == ["install"] and len(tokens) == 3 and tokens[2] in OPTIONAL_TOOLS:
            assert OPTIONAL_TOOLS[tokens[2]].exists(), OPTIONAL_TOOLS[tokens[2]]
            return
        assert text in ci["ci:install"], f"{text!r} is not CI's install command {ci['ci:install']}"
        return
    assert ci["ci:test"] == ["pytest"], "CI's test command changed: update check_ci_command"
    markers = {m.split(":")[0] for m in pyproject()["tool"]["pytest"]["ini_options"]["markers"]}
    args = iter(tokens[1:])
    for arg in args:
        if arg == "-m":  # a subset of CI's run, by marker
            words = set(re.findall(r"\w+", next(args))) - {"and", "or", "not"}
            assert words <= markers, f"unknown markers {words - markers}"
        elif arg.startswith("tests/"):
            assert (REPO / arg.split("::")[0]).exists(), f"no test file {arg}"
        else:
            assert arg in ("-q", "-x", "-v", "-ra"), f"pytest {arg}: not a variant CI covers"


#: Where PyTorch publishes its CPU-only wheels (the README's install note for CPU machines).
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


def is_cpu_torch_install(tokens: list[str]) -> bool:
    """``pip install torch torchvision --index-url <PyTorch's CPU index>``: the packages must be
    dependencies of medvision, installed before it (CI's own install takes them from PyPI)."""
    if tokens[:2] != ["pip", "install"] or "--index-url" not in tokens:
        return False
    index = tokens.index("--index-url")
    assert tokens[index + 1 : index + 2] == [CPU_TORCH_INDEX], tokens
    packages = [t for t in tokens[2:] if not t.startswith("-") and t != CPU_TORCH_INDEX]
    required = {re.split(r"[<>=\[ ]", d)[0] for d in pyproject()["project"]["dependencies"]}
    assert packages and set(packages) <= required, f"{packages} are not all in {required}"
    return True


def pyproject() -> dict:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())


def check_jupyter(tokens: list[str], command: DocCommand, workspace: Workspace, out: Path):
    """``jupyter lab FOLDER`` is interactive: checked that it has notebooks and a test runs them."""
    assert tokens[1:2] == ["lab"] and len(tokens) == 3, "only 'jupyter lab FOLDER' is known"
    notebooks = sorted((REPO / tokens[2]).glob("*.ipynb"))
    assert notebooks, f"{tokens[2]} holds no notebooks"
    assert OPTIONAL_TOOLS["jupyterlab"].exists(), "no test executes the notebooks"


def check_torchrun(tokens: list[str], command: DocCommand, workspace: Workspace, out: Path):
    from torch.distributed.run import get_args_parser

    launched = get_args_parser().parse_args(tokens[1:])
    assert launched.module and launched.training_script == "medvision.cli", (
        "torchrun must start medvision as a module: torchrun ... -m medvision.cli fit ..."
    )
    check_medvision_parses(["medvision", *launched.training_script_args])


def check_srun(tokens: list[str], command: DocCommand, workspace: Workspace, out: Path):
    rest = tokens[1:]
    while rest and rest[0].startswith("-"):
        assert "=" in rest[0], f"write srun options as --name=value: {rest[0]}"
        rest = rest[1:]
    check_medvision_parses(rest)


def check_sbatch(tokens: list[str], command: DocCommand, workspace: Workspace, out: Path):
    script = [t for t in tokens[1:] if not t.startswith("-")]
    assert len(script) == 1 and script[0] in command.script_names, (
        f"sbatch {script}: show the script on the page, in a block with '# file: NAME'"
    )


def check_medvision_parses(tokens: list[str]) -> None:
    """``medvision <subcommand> ...`` parses (paths need not exist: nothing is run)."""
    assert tokens[:1] == ["medvision"] and tokens[1] in MEDVISION_SUBCOMMANDS, tokens
    print_config(tokens[1:])


HANDLERS: dict[str, Callable] = {
    "medvision": run_medvision,
    **dict.fromkeys(MODULE_COMMANDS, run_module_command),
    "python": check_python,
    "pip": check_ci_command,
    "pytest": check_ci_command,
    "torchrun": check_torchrun,
    "srun": check_srun,
    "sbatch": check_sbatch,
    "jupyter": check_jupyter,
    "bash": check_bash,
}


def run_python_block(command: DocCommand, workspace: Workspace, out: Path, monkeypatch) -> None:
    """The block as written, in a fresh folder, with every CLI run made quick."""
    folder = out / "notebook"
    folder.mkdir()
    (folder / "configs").symlink_to(REPO / "configs")
    monkeypatch.chdir(folder)

    class QuickCLI(CLI):
        def __init__(self, args=None, run=True, **kwargs):
            args = [workspace.fill(a, None, out) for a in args]
            quick = workspace.quick_args(composed_config(args), None, full=True)
            super().__init__(args=[*args, *quick], run=run, **kwargs)

    monkeypatch.setattr(medvision.cli, "MedVisionCLI", QuickCLI)
    monkeypatch.setattr(medvision.cli.commands, "MedVisionCLI", QuickCLI)  # main(...) builds it
    # no network: a block that pushes to the Hugging Face Hub calls these with their arguments
    monkeypatch.setattr("huggingface_hub.upload_folder", lambda *, repo_id, folder_path: None)
    monkeypatch.setattr("huggingface_hub.create_repo", lambda repo_id, exist_ok=False: None)
    code = DATA_PATH.sub(lambda m: str(workspace.data_path(m.group(1), None)), command.text)
    exec(compile(code, command.where, "exec"), {"__name__": "__docs__"})


# --- tests ------------------------------------------------------------------------------------


def test_commands_were_found():
    where = {c.where.split(":")[0] for c in COMMANDS}
    assert {"README.md", "docs/getting_started.md", "docs/multi_gpu.md"} <= where
    assert any(c.kind == "python" for c in COMMANDS)


def test_extraction_joins_continuations_and_splits_chains(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n  ```bash\n  # a comment\n  medvision fit --config a.yaml \\\n"
        "    --data.x 1  # trailing\n  pip install -e . && pytest -q\n  ```\n\n"
        "```\nTable: not a command\npython benchmarks/x.py --a 1\n```\n"
    )
    found = [(c.line, c.text) for c in page_commands(page)]
    assert found == [
        (5, "medvision fit --config a.yaml --data.x 1"),
        (7, "pip install -e ."),
        (7, "pytest -q"),
        (12, "python benchmarks/x.py --a 1"),
    ]


def test_checks_reject_stale_commands(tmp_path):
    """Each kind of check fails on an instruction that no longer holds."""
    command = DocCommand(tmp_path / "page.md", 1, "bash", "")
    stale = [
        (check_benchmark, "python benchmarks/lung_segmentation.py --no-such-flag 1"),
        (check_benchmark, "python benchmarks/no_such_benchmark.py"),
        (check_bash, "bash benchmarks/gpu_check.sh --no-such-flag"),
        (check_bash, "bash benchmarks/no_such_check.sh"),
        (check_ci_command, "pip install -e ."),  # CI installs .[all,dev]
        (check_ci_command, "pytest -m no_such_marker"),
        (check_ci_command, "pytest tests/test_no_such_file.py"),
        (check_sbatch, "sbatch not_on_the_page.sbatch"),
        (check_srun, f"srun medvision fit --config {CONFIGS}/unet_lung.yaml --model.no_such 1"),
    ]
    for check, text in stale:
        with pytest.raises(AssertionError):
            check(shlex.split(text), command, None, tmp_path)
    with pytest.raises(AssertionError, match="leaves arguments out"):
        Workspace(tmp_path).fill("...", None, tmp_path)
    with pytest.raises(AssertionError, match="unknown placeholder"):
        Workspace(tmp_path).fill("--data.predict_dir=FOLDER", None, tmp_path)


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.where} {c.text[:60]}" for c in COMMANDS])
def test_documented_command(command, workspace, monkeypatch):
    out = workspace.root / "out" / hashlib.sha1(command.text.encode()).hexdigest()[:10]
    out.mkdir(parents=True)
    try:
        if command.kind == "python":
            return run_python_block(command, workspace, out, monkeypatch)
        tokens = shlex.split(command.text)
        while tokens and ENV_ASSIGNMENT.match(tokens[0]):
            name, _, value = tokens.pop(0).partition("=")
            monkeypatch.setenv(name, value)
        handler = HANDLERS.get(tokens[0])
        assert handler, f"{command.where}: no handler for '{tokens[0]}' in test_docs.py HANDLERS"
        handler(tokens, command, workspace, out)
    finally:
        shutil.rmtree(out, ignore_errors=True)
