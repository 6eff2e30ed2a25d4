"""medvision: PyTorch Lightning building blocks and a CLI for 2D medical image deep learning.

The packages, from the bottom layer up (an import only ever points down or within a package):

- ``utils``: plumbing (atomic files, run folders, provenance, safe checkpoint reading);
- ``evaluation``: metrics, surface distances, calibration, bootstrap intervals, test reports;
- ``data`` and ``models`` (beside each other, neither imports the other): datamodules per
  dataset layout; LightningModules per task, plain networks in ``models.nets``, losses and
  the preprocessing record;
- ``apply`` and ``training`` (beside each other): applying a trained model (``load_model``,
  TTA, Grad-CAM, export, prediction writers); the callbacks and loggers of a fit;
- ``pipelines``: workflows that chain trained models;
- ``cli``: the commands ``medvision``, ``medvision-cv`` and ``medvision-report``.

See ``docs/architecture.md``.
"""

from medvision.utils.moved import install as _install_moved_paths

__version__ = "0.1.0"

_install_moved_paths()  # class paths of earlier releases (medvision.callbacks.X) still load


def __getattr__(name: str):
    # loaded on first use, so that ``import medvision`` stays light
    if name == "load_model":
        from medvision.apply.inference import load_model

        return load_model
    raise AttributeError(f"module 'medvision' has no attribute {name!r}")
