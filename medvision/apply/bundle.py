"""A model bundle: a folder that shares a trained model without pickle.

``medvision export --ckpt_path CKPT --format bundle --output DIR [--onnx]`` writes::

    DIR/
        model.safetensors   the predicting module's weights (safetensors: tensors only)
        config.json         the preprocessing record, the network's arguments, the files'
                            sha256, the medvision version and bundle layout that wrote it
        model.onnx          with --onnx: [0, 1] images in, probabilities out (checked
                            against PyTorch at export, as medvision export --format onnx)
        README.md           the model card (medvision.apply.model_card), figures/ beside it

:func:`open_model` reads a bundle (or a checkpoint file) for :func:`medvision.load_model` and
``medvision predict --ckpt_path``: a folder, or a Hugging Face Hub repo id whose bundle is
in the Hub cache (``huggingface_hub.snapshot_download``; ``HF_HUB_OFFLINE=1`` keeps it to the
cache). A bundle is read from JSON and safetensors alone: ``torch.load`` is never called.
Every bad file is one error naming it: missing or damaged (its sha256 differs from
config.json's), a config.json of a newer layout, weights that do not fit the network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import medvision
from medvision.apply.model_card import write_model_card
from medvision.models.record import RECORD_KEY, Preprocessing, require_record
from medvision.utils.checkpoints import load_checkpoint
from medvision.utils.files import FILE_MODE, write_text

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
ONNX = "model.onnx"
#: ``format`` of a bundle's config.json.
FORMAT = "medvision-bundle"
#: Layout of config.json this medvision writes and reads; a newer one is refused.
BUNDLE_VERSION = 1
#: How a model runs: PyTorch on the bundle's (or checkpoint's) weights, or its ONNX file.
RUNTIMES = ("torch", "onnx")
#: ``owner/name`` of a Hugging Face Hub repository.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors", ".onnx", ".json")


@dataclass
class OpenedModel:
    """A model file or bundle, read: what :func:`medvision.load_model` builds a model from.

    Args:
        record: Its preprocessing record.
        source: The checkpoint file or the bundle folder (a repo id: its cache snapshot).
        checkpoint: The checkpoint dict, or for a bundle ``state_dict`` (from safetensors),
            the record and ``hyper_parameters``; None when only the ONNX file is needed.
        bundle: The bundle folder, or None for a checkpoint file.
        config: The bundle's config.json, or None.
    """

    record: Preprocessing
    source: Path
    checkpoint: dict | None
    bundle: Path | None = None
    config: dict | None = None


def check_runtime(runtime: str) -> str:
    """``runtime`` if it is one of :data:`RUNTIMES`.

    Args:
        runtime: ``torch`` or ``onnx``.

    Raises:
        ValueError: naming the option and the choices.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r} (--runtime): use one of {list(RUNTIMES)}.")
    return runtime


def open_model(path: str | Path, runtime: str = "torch") -> OpenedModel:
    """Read a checkpoint file, a bundle folder or a bundle's Hub repo id.

    Args:
        path: A ``.ckpt`` or weights file, a bundle folder, or ``owner/name`` of a bundle in
            the Hugging Face Hub cache.
        runtime: ``torch`` (reads the weights) or ``onnx`` (a bundle's config.json only; its
            ``model.onnx`` is opened by :mod:`medvision.apply.onnx_runtime`).

    Raises:
        FileNotFoundError: for a missing file, folder or cached repo.
        ValueError: naming the file: not a medvision checkpoint or bundle, damaged, of a newer
            layout, without a record; ``onnx`` for a checkpoint file.
    """
    check_runtime(runtime)
    folder = bundle_folder(path, runtime)
    if folder is None:
        if runtime == "onnx":
            raise ValueError(
                f"runtime onnx runs a bundle's {ONNX}, and {path} is a checkpoint file: export "
                f"one with medvision export --ckpt_path {path} --format bundle --onnx --output DIR"
            )
        checkpoint = load_checkpoint(path, mmap=True)
        return OpenedModel(require_record(checkpoint, path), Path(path), checkpoint)
    config, record = read_config(folder)
    checkpoint = None
    if runtime == "torch":
        checkpoint = {
            "state_dict": read_weights(folder, config),
            RECORD_KEY: {"preprocessing": record.to_dict()},
            "hyper_parameters": _hyper_parameters(record),
        }
    return OpenedModel(record, folder, checkpoint, folder, config)


def bundle_folder(path: str | Path, runtime: str = "torch") -> Path | None:
    """The bundle folder ``path`` names, or None for a file (or nothing) at ``path``.

    An existing folder is taken as it is; a name that exists nowhere and has the form
    ``owner/name`` is looked up with ``huggingface_hub.snapshot_download`` (the files that
    ``runtime`` needs), which keeps to the local cache when ``HF_HUB_OFFLINE=1``.

    Args:
        path: A folder, a file, or a Hub repo id.
        runtime: ``torch`` or ``onnx``: the files fetched from the Hub.

    Raises:
        FileNotFoundError: for a repo id that is neither a local path nor in the Hub cache.
    """
    local = Path(path)
    if local.is_dir():
        return local
    text = str(path)
    if local.exists() or not _REPO_ID.match(text) or text.endswith(_CHECKPOINT_SUFFIXES):
        return None
    return _hub_snapshot(text, [CONFIG, WEIGHTS if runtime == "torch" else ONNX])


def _hub_snapshot(repo_id: str, files: list[str]) -> Path:
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=files))
    except (OSError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise FileNotFoundError(
            f"{repo_id}: no such file or folder here, and no bundle of that Hugging Face Hub "
            f"repo in the cache {constants.HF_HUB_CACHE} ({reason}). Give the bundle's folder, "
            f"or download it first: hf download {repo_id}"
        ) from None


def weights_file(source: Path) -> Path:
    """The file holding the weights of a checkpoint file or bundle folder (named in errors).

    Args:
        source: A checkpoint file, or a bundle folder.
    """
    return source / WEIGHTS if source.is_dir() else source


def read_config(folder: Path) -> tuple[dict, Preprocessing]:
    """A bundle's config.json and its record, checked.

    Args:
        folder: The bundle folder.

    Raises:
        ValueError: naming config.json when it is missing, not JSON, not a bundle's, of a
            newer layout, or holds an invalid record (or a network that disagrees with it).
    """
    path = folder / CONFIG
    if not path.is_file():
        raise ValueError(
            f"{folder} is a folder without {CONFIG}: not a medvision bundle. Give a bundle "
            "(medvision export --format bundle) or a checkpoint file."
        )
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error}); export the bundle again.") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{path}: not the config of a medvision bundle (format {FORMAT!r}).")
    layout = config.get("bundle_version")
    if not isinstance(layout, int):
        raise ValueError(f"{path}: no bundle_version (an int); export the bundle again.")
    if layout > BUNDLE_VERSION:
        raise ValueError(
            f"{path}: written by medvision {config.get('medvision_version')} in bundle layout "
            f"{layout}, newer than this medvision {medvision.__version__} reads "
            f"({BUNDLE_VERSION}): upgrade medvision (pip install -U medvision-lightning)."
        )
    record = Preprocessing.from_dict(config.get("preprocessing") or {}, path)
    network = config.get("network")
    if network is not None and network != record.module_config(linked=True):
        raise ValueError(
            f"{path}: its network and its preprocessing record's network disagree (edited by "
            "hand?); export the bundle again."
        )
    return config, record


def read_checked(folder: Path, name: str, config: dict) -> bytes:
    """The bytes of the bundle's file ``name``, checked against config.json's sha256.

    Args:
        folder: The bundle folder.
        name: ``model.safetensors`` or ``model.onnx``.
        config: The bundle's config.json.

    Raises:
        ValueError: naming the file when it is missing or its sha256 differs.
    """
    path = folder / name
    if not path.is_file():
        raise ValueError(f"{path} is missing: the bundle is incomplete; export it again.")
    data = path.read_bytes()
    expected = (config.get("files") or {}).get(name, {}).get("sha256")
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise ValueError(
            f"{path}: damaged or replaced (its sha256 differs from the one {CONFIG} records); "
            "download or export the bundle again."
        )
    return data


def read_weights(folder: Path, config: dict) -> dict:
    """The bundle's ``state_dict`` from model.safetensors (tensors only, no pickle).

    Args:
        folder: The bundle folder.
        config: Its config.json.

    Raises:
        ValueError: naming model.safetensors when missing, damaged or unreadable.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    data = read_checked(folder, WEIGHTS, config)
    try:
        return load(data)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise ValueError(
            f"{folder / WEIGHTS}: not a readable safetensors file ({error}); export the bundle "
            "again."
        ) from None


def _hyper_parameters(record: Preprocessing) -> dict:
    module = record.module_config(linked=True)
    return {"_class_path": module["class_path"], **module["init_args"]}


def write_bundle(
    predictor,
    output: str | Path,
    checkpoint: str | Path | None = None,
    onnx: Callable[[Path], dict] | None = None,
) -> dict:
    """Write the bundle of a loaded model into the new folder ``output``, whole or not at all.

    Args:
        predictor: The loaded model (:func:`medvision.load_model`; its ``module`` and
            ``preprocessing``).
        output: The bundle folder to make; it must not exist, or be empty.
        checkpoint: The checkpoint it came from: the model card reads its run folder.
        onnx: Writes ``model.onnx`` to the path it is given and returns its description
            (``medvision.apply.export`` passes its checked ONNX writer); None: no ONNX.

    Returns:
        The bundle's config.json.

    Raises:
        ValueError: when ``output`` exists and is not an empty folder.
    """
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ValueError(f"{output} exists: give a new folder as --output, or remove it.")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".partial-{output.name}-"))
    try:
        config = _write_files(predictor, staging, checkpoint, onnx)
        write_model_card(staging, config, checkpoint, name=output.name)
        _publish(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("Bundle of %s written to %s", checkpoint or predictor.source, output)
    return config


def _write_files(predictor, folder: Path, checkpoint, onnx) -> dict:
    from safetensors.torch import save_file

    record = predictor.preprocessing
    state = {
        k: v.detach().cpu().contiguous().clone() for k, v in predictor.module.state_dict().items()
    }
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt"})
    config = {
        "format": FORMAT,
        "bundle_version": BUNDLE_VERSION,
        "medvision_version": medvision.__version__,
        "network": record.module_config(linked=True),
        "preprocessing": record.to_dict(),
        "trained_from": None if checkpoint is None else Path(checkpoint).name,
        "files": {WEIGHTS: _file_entry(folder / WEIGHTS)},
    }
    if onnx is not None:
        config["onnx"] = onnx(folder / ONNX)
        config["files"][ONNX] = _file_entry(folder / ONNX)
    write_text(folder / CONFIG, json.dumps(config, indent=2))
    return config


def _file_entry(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"sha256": digest.hexdigest(), "bytes": path.stat().st_size}


def _publish(staging: Path, output: Path) -> None:
    """Rename the staged folder ``output``, its files and folders readable as ``open`` and
    ``mkdir`` make them (``mkdtemp`` and safetensors make them private)."""
    folder_mode = FILE_MODE | ((FILE_MODE & 0o444) >> 2)  # searchable where readable
    for path in [staging, *staging.rglob("*")]:
        os.chmod(path, folder_mode if path.is_dir() else FILE_MODE)
    if output.is_dir():
        output.rmdir()  # empty (checked above)
    os.rename(staging, output)
