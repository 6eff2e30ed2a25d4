"""Calibration of classifier probabilities: ECE, reliability diagrams, temperature scaling.

Expected calibration error (ECE) uses ``n_bins`` equal-width confidence bins over [0, 1]
(torchmetrics' binning: bin ``b`` holds confidences in ``[b / n, (b + 1) / n)``) and is the
count-weighted mean over bins of ``|accuracy - mean confidence|`` (the L1 calibration error).

- Single-label (softmax) models: the *top-label* ECE; confidence is the largest class
  probability and accuracy whether that class is the true one.
- Multi-label (sigmoid) models: one ECE per label, treating the label as a binary problem;
  confidence is the label's probability and "accuracy" the share of positives in the bin.
  Entries whose label is unknown (``known == 0``) are left out; a label with no known entry
  gets NaN (no data to judge its calibration), so use ``nanmean`` to average over labels.

Temperature scaling (Guo et al., 2017) divides logits by one scalar ``T > 0`` fitted on
validation logits; it changes confidence but never the predicted class (nor the ranking of
one label's scores), so accuracy and AUROC stay the same.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import (
    binary_calibration_error,
    multiclass_calibration_error,
)

from medvision.utils.files import save_png

log = logging.getLogger(__name__)

#: Fitted temperatures are kept within these bounds (a bound hit is logged as a warning).
TEMPERATURE_RANGE = (1e-2, 1e2)


def _as_tensor(values, dtype: torch.dtype | None = None) -> torch.Tensor:
    tensor = torch.as_tensor(values).detach().cpu()
    return tensor if dtype is None else tensor.to(dtype)


def _check_probabilities(probs: torch.Tensor, name: str = "probs") -> None:
    if not probs.is_floating_point():
        raise ValueError(f"{name} must hold float probabilities, got dtype {probs.dtype}")
    if not torch.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise ValueError(
            f"{name} must be probabilities in [0, 1]; got values in "
            f"[{probs.min():.4g}, {probs.max():.4g}]. Pass softmax (single-label) or sigmoid "
            "(multi-label) outputs, not logits."
        )


def _check_single_label(probs: torch.Tensor, labels: torch.Tensor) -> None:
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(
            f"expected probs N x K and labels N, got {tuple(probs.shape)} and {tuple(labels.shape)}"
        )
    if len(labels) == 0:
        raise ValueError("no predictions to assess calibration on (0 rows)")
    _check_probabilities(probs)
    if not torch.allclose(probs.sum(1), torch.ones(len(probs), dtype=probs.dtype), atol=1e-3):
        raise ValueError(
            "probs rows must sum to 1 (softmax outputs of a single-label model); for a "
            "multi-label (sigmoid) model use per_label_ece"
        )
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must lie in [0, {probs.shape[1] - 1}], got {labels.unique()}")


def expected_calibration_error(probs, labels, num_bins: int = 15) -> float:
    """Top-label expected calibration error of a single-label classifier.

    Args:
        probs: ``N x K`` class probabilities (rows sum to 1), tensor or array.
        labels: ``N`` integer true classes in ``[0, K)``.
        num_bins: Number of equal-width confidence bins over [0, 1].

    Returns:
        The ECE in [0, 1] (0: perfectly calibrated), computed by torchmetrics'
        ``multiclass_calibration_error`` with ``norm="l1"``.
    """
    probs = _as_tensor(probs).float()
    labels = _as_tensor(labels, torch.long)
    _check_single_label(probs, labels)
    return float(
        multiclass_calibration_error(
            probs, labels, num_classes=probs.shape[1], n_bins=num_bins, norm="l1"
        )
    )


def per_label_ece(probs, targets, known=None, num_bins: int = 15) -> torch.Tensor:
    """Expected calibration error of each label of a multi-label classifier.

    Args:
        probs: ``N x K`` sigmoid probabilities in [0, 1].
        targets: ``N x K`` 0/1 targets (values at unknown entries are ignored).
        known: Optional ``N x K`` mask, 1 where the label is known and 0 where it is unknown
            (uncertain, blank); unknown entries are left out. ``None``: all known.
        num_bins: Number of equal-width probability bins over [0, 1].

    Returns:
        Float tensor ``K``: each label's ECE (torchmetrics' ``binary_calibration_error``,
        ``norm="l1"``) over its known entries; NaN for a label with no known entry. A loop
        over labels because torchmetrics has no multi-label calibration error, nor a mask of
        unknown entries.
    """
    probs = _as_tensor(probs).float()
    targets = _as_tensor(targets).float()
    known = torch.ones_like(targets) if known is None else _as_tensor(known).float()
    if probs.ndim != 2 or targets.shape != probs.shape or known.shape != probs.shape:
        raise ValueError(
            f"expected probs, targets and known all N x K, got {tuple(probs.shape)}, "
            f"{tuple(targets.shape)} and {tuple(known.shape)}"
        )
    _check_probabilities(probs)
    known = known > 0.5
    if ((targets[known] != 0) & (targets[known] != 1)).any():
        raise ValueError("targets must be 0 or 1 where known (mark unknown labels in `known`)")
    errors = torch.full((probs.shape[1],), float("nan"))
    for k in range(probs.shape[1]):
        rows = known[:, k]
        if rows.any():
            errors[k] = binary_calibration_error(
                probs[rows, k], targets[rows, k].long(), n_bins=num_bins, norm="l1"
            )
    return errors


def reliability_bins(
    confidences: torch.Tensor, correct: torch.Tensor, num_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin accuracy, mean confidence and count, binned as torchmetrics does for the ECE.

    Our own binning because torchmetrics returns the ECE but not its bins (its binning is
    private); the count-weighted mean of ``|accuracy - confidence|`` here is its ECE.

    Args:
        confidences: ``N`` confidences in [0, 1].
        correct: ``N`` 0/1 outcomes (prediction correct, or the binary target).
        num_bins: Number of equal-width bins over [0, 1]; a confidence of exactly 1 falls in
            the last one.

    Returns:
        ``(accuracy, confidence, count)``, each of length ``num_bins``; accuracy and
        confidence are NaN in empty bins.
    """
    index = (
        torch.bucketize(confidences.contiguous(), torch.linspace(0, 1, num_bins + 1), right=True)
        - 1
    )
    index = index.clamp(0, num_bins - 1)
    count = torch.bincount(index, minlength=num_bins).double()
    total_conf = torch.bincount(index, weights=confidences.double(), minlength=num_bins)
    total_correct = torch.bincount(index, weights=correct.double(), minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = (total_correct / count).numpy()
        confidence = (total_conf / count).numpy()
    return accuracy, confidence, count.numpy().astype(int)


def reliability_diagram_image(
    probs, labels, num_bins: int = 15, title: str | None = None
) -> np.ndarray:
    """Render a reliability diagram as a uint8 ``H x W x 3`` RGB image.

    Args:
        probs: Either ``N x K`` softmax probabilities with ``labels`` the ``N`` true classes
            (top-label diagram), or ``N`` probabilities of one binary label (e.g. one label
            of a multi-label model, known entries only) with ``labels`` its ``N`` 0/1 targets.
        labels: True classes or 0/1 targets, as above.
        num_bins: Number of equal-width confidence bins.
        title: Text before the ECE in the title (e.g. the model or label name).

    Returns:
        The figure: per-bin accuracy bars, shaded gaps up (or down) to the bin's mean
        confidence and the diagonal (perfect calibration) above; per-bin counts below; the
        ECE in the title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # not pyplot: leave the process's backend alone

    probs, labels = _as_tensor(probs).float(), _as_tensor(labels)
    if probs.ndim == 1:
        ece = float(per_label_ece(probs[:, None], labels[:, None], num_bins=num_bins)[0])
        confidences, correct, ylabel = probs, labels.float(), "fraction of positives"
    else:
        ece = expected_calibration_error(probs, labels, num_bins)
        confidences, predicted = probs.max(dim=1)
        correct, ylabel = (predicted == labels.long()).float(), "accuracy"
    accuracy, confidence, count = reliability_bins(confidences, correct, num_bins)
    edges = np.linspace(0, 1, num_bins + 1)

    figure = Figure(figsize=(5, 6), dpi=100)
    canvas = FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(
        edges[:-1],
        np.nan_to_num(accuracy),
        width=1 / num_bins,
        align="edge",
        edgecolor="black",
        color="tab:blue",
        label=ylabel,
    )
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    gap = np.nan_to_num(confidence - accuracy)
    top.bar(
        edges[:-1],
        gap,
        bottom=np.nan_to_num(accuracy),
        width=1 / num_bins,
        align="edge",
        color="tab:red",
        alpha=0.3,
        hatch="//",
        label="gap to mean confidence",
    )
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel=ylabel)
    top.legend(loc="upper left", fontsize="small")
    bottom.bar(
        edges[:-1], count, width=1 / num_bins, align="edge", edgecolor="black", color="tab:gray"
    )
    bottom.set(xlabel="confidence", ylabel="count")
    top.set_title(f"{title + ': ' if title else ''}ECE {ece:.3f} ({num_bins} bins, N={len(probs)})")
    figure.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def reliability_diagram(
    probs, labels, path: str | Path, num_bins: int = 15, title: str | None = None
) -> Path:
    """Write a reliability diagram (see :func:`reliability_diagram_image`) as PNG, atomically.

    Args:
        probs: ``N x K`` softmax probabilities, or ``N`` probabilities of one binary label.
        labels: ``N`` true classes, or ``N`` 0/1 targets of that label.
        path: Output PNG file; its folder is created.
        num_bins: Number of equal-width confidence bins.
        title: Text before the ECE in the title.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    save_png(path, reliability_diagram_image(probs, labels, num_bins, title))
    return path


def apply_temperature(logits, temperature: float) -> torch.Tensor:
    """Logits divided by the temperature (softmax or sigmoid them afterwards).

    Args:
        logits: Logits of any shape.
        temperature: ``T > 0`` from :func:`fit_temperature`.

    Returns:
        ``logits / temperature`` as a tensor.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return torch.as_tensor(logits) / temperature


def _empty_split_error(what: str) -> ValueError:
    return ValueError(
        f"fit_temperature: {what}. Temperature scaling is fitted on held-out validation "
        "predictions: give the datamodule a validation split (e.g. --data.val_fraction 0.1) "
        "and run validation before fitting."
    )


def _nll_function(logits, labels, multilabel: bool, known):
    logits = _as_tensor(logits, torch.float64)
    labels = _as_tensor(labels)
    if logits.numel() == 0 or len(logits) == 0:
        raise _empty_split_error("the validation split is empty (0 logits)")
    if not torch.isfinite(logits).all():
        raise ValueError("fit_temperature: logits hold NaN or infinite values")
    if logits.ndim != 2 or labels.shape != (logits.shape if multilabel else logits.shape[:1]):
        expected = "N x K targets" if multilabel else "N labels"
        raise ValueError(
            f"fit_temperature: expected N x K logits and {expected}, got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if not multilabel:
        labels = labels.long()
        return lambda t: F.cross_entropy(logits / t, labels)
    weight = torch.ones_like(logits) if known is None else _as_tensor(known).double()
    if weight.shape != logits.shape:
        raise ValueError(f"known must be N x K like logits, got {tuple(weight.shape)}")
    weight = (weight > 0.5).double()
    if weight.sum() == 0:
        raise _empty_split_error("no validation label is known (the `known` mask is all 0)")
    targets = torch.where(weight > 0, labels.double(), 0.0)
    return lambda t: (
        F.binary_cross_entropy_with_logits(logits / t, targets, weight=weight, reduction="sum")
        / weight.sum()
    )


def negative_log_likelihood(
    logits, labels, temperature: float = 1.0, multilabel: bool = False, known=None
) -> float:
    """Mean negative log-likelihood of ``logits / temperature``: what temperature scaling lowers.

    Args:
        logits: ``N x K`` logits.
        labels: ``N`` true classes, or ``N x K`` 0/1 targets with ``multilabel``.
        temperature: ``T > 0``.
        multilabel: Binary cross-entropy per known label instead of the softmax NLL.
        known: With ``multilabel``, optional ``N x K`` mask, 0 where a label is unknown.

    Returns:
        The NLL in nats per image (single-label) or per known label (multi-label).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    nll = _nll_function(logits, labels, multilabel, known)
    return float(nll(torch.tensor(float(temperature), dtype=torch.float64)))


def fit_temperature(logits, labels, multilabel: bool = False, known=None) -> float:
    """The temperature ``T`` minimizing the validation NLL of ``logits / T``.

    Optimizes ``log T`` (so ``T`` stays positive) from ``T = 1`` with L-BFGS in float64 on
    CPU, which is deterministic. ``T > 1`` softens an over-confident model, ``T < 1`` sharpens
    an under-confident one. The result is clamped to :data:`TEMPERATURE_RANGE` (with a
    warning): degenerate validation logits have no finite optimum (all confidently wrong:
    ``T -> inf``; all correct with wide margins: ``T -> 0``, where the NLL is flat and L-BFGS
    stops early at some ``T < 1``).

    Args:
        logits: ``N x K`` validation logits (not probabilities).
        labels: ``N`` true classes, or ``N x K`` 0/1 targets with ``multilabel``.
        multilabel: Sigmoid (binary cross-entropy per label) instead of softmax NLL.
        known: With ``multilabel``, optional ``N x K`` mask, 0 where a label is unknown (left
            out of the NLL).

    Returns:
        The temperature as a float.

    Raises:
        ValueError: empty validation split (or no known label), mismatched shapes,
            non-finite logits.
    """
    nll = _nll_function(logits, labels, multilabel, known)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [log_t], lr=1.0, max_iter=200, tolerance_grad=1e-10, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nll(log_t.exp())
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = math.exp(float(log_t.detach()))
    low, high = TEMPERATURE_RANGE
    if not low <= temperature <= high:
        log.warning(
            "fitted temperature %.3g is outside [%g, %g] and was clamped: the validation "
            "predictions are degenerate (e.g. all confidently wrong: T grows without bound)",
            temperature,
            low,
            high,
        )
        temperature = min(max(temperature, low), high)
    return temperature
