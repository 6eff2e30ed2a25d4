"""The notebooks in notebooks/ execute top to bottom on synthetic data.

Each notebook runs in a fresh Jupyter kernel of this very interpreter (a kernelspec written to
a temporary ``JUPYTER_PATH``, so no other installed ``python3`` kernel can stand in), with its
working directory ``<tmp>/notebooks`` next to a copy of ``configs/``: the notebooks' own
``../configs`` and ``../runs/notebooks/...`` paths then resolve inside the temporary folder and
nothing is written into the repository. A failing cell fails the test with that cell's error.

The test runs them smaller than their defaults: right after a notebook's parameters cell (its
first code cell, tagged ``parameters`` as in papermill) it adds a cell of its own settings,
:data:`QUICK_SETTINGS` (one epoch, 32 px, fewer images); every other cell runs as written.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from .conftest import CONFIGS, REPO

NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL_NAME = "medvision-pytest"
#: seconds any one cell may take before the test fails (the notebooks take about a minute each)
CELL_TIMEOUT = 600
#: the test's settings per notebook, set in a cell after its parameters cell: every stage runs
#: once, on small images, which is all that running the cells top to bottom needs
QUICK_SETTINGS = {
    "01_lung_segmentation": {"EPOCHS": 1, "IMAGE_SIZE": 32, "SYNTHETIC_SLICES": 20},
    "02_chest_xray_classification": {"EPOCHS": 1, "IMAGE_SIZE": 32, "SYNTHETIC_SCALE": 0.5},
    "03_gan_rebalancing": {
        "EXTRACTOR_EPOCHS": 1,
        "EPOCHS": 1,
        "GAN_EPOCHS": 1,
        "GAN_WIDTH": 8,
        "IMAGE_SIZE": 32,
        "SYNTHETIC_SCALE": 0.5,
    },
}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def nb_tools():
    """``(nbformat, NotebookClient, CellExecutionError)``; fails, naming the fix, if missing."""
    try:
        import nbformat
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError
    except ImportError as error:
        pytest.fail(f"{error}: the notebook tests need the dev extra: pip install -e '.[dev]'")
    return nbformat, NotebookClient, CellExecutionError


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec that starts ipykernel with this interpreter; returns its name."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "medvision tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL_NAME


def execute(nb_tools, kernel: str, notebook, cwd: Path):
    """Run every cell of ``notebook`` in ``cwd``; a failing cell fails the test with its error."""
    _, NotebookClient, CellExecutionError = nb_tools
    client = NotebookClient(
        notebook,
        kernel_name=kernel,
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(cwd)}},
    )
    try:
        client.execute()
    except CellExecutionError as error:
        pytest.fail(f"a cell failed:\n{_ANSI.sub('', str(error))}", pytrace=False)
    return notebook


def outputs_of(notebook, mime: str) -> list:
    """Every output of the executed notebook's code cells that carries ``mime`` data."""
    return [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if mime in output.get("data", {})
    ]


def code_cells(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]


def with_settings(nbformat, notebook, settings: dict):
    """``notebook`` with a cell setting ``settings`` right after its parameters cell.

    Each name must be set in the parameters cell, so a renamed setting fails here instead of
    leaving the notebook at its (slower) default.
    """
    index = next(
        i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])
    )
    for name in settings:
        assert re.search(rf"^{name} = ", notebook.cells[index].source, re.M), name
    source = "\n".join(f"{name} = {value!r}" for name, value in settings.items())
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(source))
    return notebook


def test_the_three_notebooks_are_there():
    assert {p.name for p in NOTEBOOKS} >= {
        "01_lung_segmentation.ipynb",
        "02_chest_xray_classification.ipynb",
        "03_gan_rebalancing.ipynb",
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_clean_with_data_dir_on_top(path: Path):
    """No outputs in the repository; the first code cell switches to real data with DATA_DIR."""
    notebook = json.loads(path.read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, (
                f"{path.name} is stored with outputs: clear them before committing "
                "(Jupyter: Edit > Clear Outputs of All Cells)"
            )
    first = code_cells(path)[0]
    assert re.search(r"^DATA_DIR = None  # set to the real folder", first, re.M), first
    [parameters] = [c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert "".join(parameters["source"]) == first, "tag the first code cell 'parameters'"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_defines_no_model_or_training_code(path: Path):
    """Models, losses and loops come from medvision; a notebook only drives them."""
    source = "\n".join(code_cells(path))
    for pattern in (r"^\s*class \w", r"nn\.Module", r"\.backward\(", r"\.step\(\)"):
        assert not re.search(pattern, source, re.M), f"{path.name} matches {pattern!r}"


def test_kernel_runs_this_interpreter(nb_tools, kernel, tmp_path):
    nbformat = nb_tools[0]
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("import sys, medvision\nprint(sys.executable)")]
    execute(nb_tools, kernel, notebook, tmp_path)
    [output] = notebook.cells[0].outputs
    assert Path(output.text.strip()).resolve() == Path(sys.executable).resolve()


def test_a_failing_cell_fails_with_its_error(nb_tools, kernel, tmp_path):
    nbformat = nb_tools[0]
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("raise ValueError('bad DATA_DIR')")]
    with pytest.raises(pytest.fail.Exception, match="ValueError: bad DATA_DIR"):
        execute(nb_tools, kernel, notebook, tmp_path)


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_top_to_bottom(nb_tools, kernel, tmp_path, path: Path):
    nbformat = nb_tools[0]
    shutil.copytree(CONFIGS, tmp_path / "configs")
    cwd = tmp_path / "notebooks"
    cwd.mkdir()
    notebook = with_settings(nbformat, nbformat.read(path, as_version=4), QUICK_SETTINGS[path.stem])
    notebook = execute(nb_tools, kernel, notebook, cwd)

    assert outputs_of(notebook, "text/markdown"), "no results table was displayed"
    assert outputs_of(notebook, "image/png"), "no figure was displayed"
    written = tmp_path / "runs" / "notebooks" / path.stem
    assert any(written.rglob("*.ckpt")), f"no checkpoint under {written}"
