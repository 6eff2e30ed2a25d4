"""Seeded train/val/test splits: plain, grouped (by lesion or patient), stratified, and k-fold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np


def split_indices(
    num_items: int,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 42,
    num_folds: int | None = None,
    fold: int = 0,
) -> dict[str, np.ndarray]:
    """Seeded train/val/test split of ``range(num_items)``, or one fold of k-fold CV.

    The test set is drawn first and is the same for every fold. Bad fractions or folds, or a
    split that leaves no training items, raise ``ValueError``.

    Args:
        num_items: How many items to split.
        val_fraction: Fraction of all items for validation, in [0, 1) (unused with
            ``num_folds``).
        test_fraction: Fraction of all items for testing, in [0, 1).
        seed: Seed of the permutation.
        num_folds: Cut the non-test items into this many folds (at least 2); None: split them
            by ``val_fraction``.
        fold: With ``num_folds``, the fold (0-based) that is the validation set.

    Returns:
        Sorted index arrays under ``"train"``, ``"val"`` and ``"test"``.
    """
    _check_split_args(val_fraction, test_fraction, num_folds, fold)
    order = np.random.default_rng(seed).permutation(num_items)
    num_test = round(num_items * test_fraction)
    test, rest = order[:num_test], order[num_test:]
    if num_folds is not None:
        if len(rest) < num_folds:
            raise ValueError(
                f"{len(rest)} items outside the test set cannot make {num_folds} folds"
            )
        folds = np.array_split(rest, num_folds)
        val = folds[fold]
        train = np.concatenate([f for i, f in enumerate(folds) if i != fold])
    else:
        num_val = round(num_items * val_fraction)
        val, train = rest[:num_val], rest[num_val:]
    if len(train) == 0:
        raise ValueError(f"the split leaves no training items out of {num_items}")
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def _check_split_args(
    val_fraction: float, test_fraction: float, num_folds: int | None, fold: int
) -> None:
    if not 0 <= test_fraction < 1 or not 0 <= val_fraction < 1:
        raise ValueError(
            f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must lie in [0, 1)"
        )
    if num_folds is None and val_fraction + test_fraction >= 1:
        raise ValueError("val_fraction + test_fraction must be below 1")
    if num_folds is not None and (num_folds < 2 or not 0 <= fold < num_folds):
        raise ValueError(
            f"need num_folds >= 2 and 0 <= fold < num_folds, got num_folds={num_folds}, fold={fold}"
        )


def grouped_split_indices(
    groups: Sequence[str],
    labels: Sequence[int],
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 42,
    num_folds: int | None = None,
    fold: int = 0,
    mixed_labels: Literal["error", "majority"] = "error",
) -> dict[str, np.ndarray]:
    """:func:`split_indices` for items that come in groups: a group never straddles two splits.

    Groups are split per label (stratified), test first, then validation by
    ``val_fraction`` or as fold ``fold`` of ``num_folds``; the test set is the same for every
    fold. Fractions count groups, per label.

    Args:
        groups: The group of each item (a lesion, a patient).
        labels: The class of each item, for stratification.
        val_fraction: Fraction of each label's groups for validation (unused with
            ``num_folds``).
        test_fraction: Fraction of each label's groups for testing.
        seed: Seed of the permutations.
        num_folds: Cut the non-test groups into this many folds; None: split by
            ``val_fraction``.
        fold: With ``num_folds``, the fold (0-based) that is the validation set.
        mixed_labels: What a group whose items differ in label does: ``error`` raises
            ``ValueError`` naming such groups; ``majority`` counts it as its most frequent
            label (ties: the smallest).

    Returns:
        Sorted item indices under ``"train"``, ``"val"`` and ``"test"``.
    """
    _check_split_args(val_fraction, test_fraction, num_folds, fold)
    groups, labels = np.asarray(groups), np.asarray(labels)
    names, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    group_labels = labels[first]
    mixed = np.bincount(inverse, weights=group_labels[inverse] != labels) > 0
    if mixed.any() and mixed_labels == "error":
        raise ValueError(
            f"groups with items of different labels: {[str(m) for m in names[mixed][:5]]}"
        )
    for group in np.flatnonzero(mixed):  # majority label, ties to the smallest
        group_labels[group] = np.bincount(labels[inverse == group]).argmax()
    rng = np.random.default_rng(seed)
    split_of_group = np.empty(len(names), dtype=object)
    for label in np.unique(group_labels):
        members = rng.permutation(np.flatnonzero(group_labels == label))
        num_test = round(len(members) * test_fraction)
        split_of_group[members[:num_test]] = "test"
        rest = members[num_test:]
        if num_folds is not None:
            chunks = np.array_split(rest, num_folds)
            split_of_group[rest] = "train"
            split_of_group[chunks[fold]] = "val"
        else:
            num_val = round(len(members) * val_fraction)
            split_of_group[rest[:num_val]] = "val"
            split_of_group[rest[num_val:]] = "train"
    item_split = split_of_group[inverse]
    indices = {name: np.flatnonzero(item_split == name) for name in ("train", "val", "test")}
    if len(indices["train"]) == 0:
        raise ValueError(f"the split leaves no training items out of {len(groups)}")
    return indices


def stratified_split(
    labels: Sequence[int], fraction: float, seed: int = 42
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of indices into ``(rest, held_out)``, ``fraction`` of each class held out.

    Every class with at least two items puts at least one into ``held_out``, and keeps at
    least one, so per-class metrics exist on both.

    Args:
        labels: The class of each item.
        fraction: Fraction of each class to hold out, in (0, 1).
        seed: Seed of the permutations.

    Returns:
        ``(rest, held_out)``, sorted index arrays.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held_out = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = round(len(members) * fraction)
        if len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        held_out.append(members[:count])
    held = np.sort(np.concatenate(held_out)) if held_out else np.array([], dtype=int)
    rest = np.setdiff1d(np.arange(len(labels)), held)
    return rest, held


@dataclass(frozen=True)
class Split:
    """A datamodule's split options: seeded fractions, or one fold of k-fold cross-validation.

    Attributes:
        val_fraction: Fraction for validation, in [0, 1) (unused with ``num_folds``).
        test_fraction: Fraction held out for testing, in [0, 1); the same for every fold.
        seed: Seed of the split.
        num_folds: Cut the non-test items into this many folds; None: split by
            ``val_fraction``.
        fold: With ``num_folds``, the fold (0-based) that is the validation set.
    """

    val_fraction: float
    test_fraction: float
    seed: int
    num_folds: int | None = None
    fold: int = 0

    def indices(self, num_items: int) -> dict[str, np.ndarray]:
        """:func:`split_indices` of ``range(num_items)`` with these options.

        Args:
            num_items: How many items to split.
        """
        return split_indices(num_items, **asdict(self))

    def grouped_indices(
        self, groups: Sequence[str], labels: Sequence[int]
    ) -> dict[str, np.ndarray]:
        """:func:`grouped_split_indices` with these options: a group never straddles two splits.

        Args:
            groups: The group of each item (a lesion, a patient).
            labels: The class of each item, for stratification.
        """
        return grouped_split_indices(groups, labels, **asdict(self))
