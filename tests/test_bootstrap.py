"""Bootstrap confidence intervals: coverage of the estimate, width, pairing, seeds, NaN skips."""

import numpy as np
import pytest
import scipy.stats
import torch
from sklearn.metrics import roc_auc_score
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_f1_score,
)

from medvision.evaluation.bootstrap import BootstrapResult, bootstrap_ci, paired_bootstrap
from medvision.evaluation.statistics import (
    CLASSIFICATION_STATISTICS,
    balanced_accuracy_statistic,
    classification_statistics,
    macro_auroc_statistic,
    macro_f1_statistic,
    mean_statistic,
)


def dice_scores(num_items, mean, seed=0):
    return np.clip(np.random.default_rng(seed).normal(mean, 0.1, num_items), 0, 1)


def classifier_outputs(num_items=200, num_classes=3, skill=2.0, seed=0):
    """Probabilities of a classifier whose logit for the true class is raised by ``skill``."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_items) % num_classes
    logits = torch.randn(num_items, num_classes, generator=generator)
    logits[torch.arange(num_items), labels] += skill
    return logits.softmax(1), labels


def test_mean_interval_contains_estimate_and_unpacks():
    scores = dice_scores(100, 0.8)
    result = bootstrap_ci(mean_statistic(scores), len(scores), num_samples=500)
    assert isinstance(result, BootstrapResult)
    estimate, low, high = result
    assert estimate == pytest.approx(scores.mean())
    assert low < estimate < high
    # the standard error of a mean of 100 values with sd ~0.1 is ~0.01: a 95% CI of ~±0.02
    assert 0.025 < high - low < 0.06
    assert (result.level, result.num_samples, result.num_skipped) == (0.95, 500, 0)


def test_width_shrinks_with_more_items():
    def width(num_items):
        _, low, high = bootstrap_ci(mean_statistic(dice_scores(num_items, 0.8)), num_items, 300)
        return high - low

    # width ~ 1 / sqrt(n): 16x the items -> about a quarter of the width
    assert width(800) < 0.4 * width(50)


def test_level_widens_interval():
    statistic = mean_statistic(dice_scores(60, 0.7))
    narrow = bootstrap_ci(statistic, 60, 300, level=0.5)
    wide = bootstrap_ci(statistic, 60, 300, level=0.99)
    assert wide.low < narrow.low < narrow.high < wide.high


def test_seeded_results_reproducible_and_global_rng_untouched():
    statistic = mean_statistic(dice_scores(40, 0.6))
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    first = bootstrap_ci(statistic, 40, 200, seed=7)
    assert np.random.random() == before  # no global reseeding or draws
    assert bootstrap_ci(statistic, 40, 200, seed=7) == first
    assert bootstrap_ci(statistic, 40, 200, seed=8) != first


def test_identical_models_paired_difference_exactly_zero():
    probs, labels = classifier_outputs()
    statistic = macro_f1_statistic(probs, labels)
    result = paired_bootstrap(statistic, statistic, len(labels), num_samples=200)
    assert tuple(result) == (0.0, 0.0, 0.0)
    same = mean_statistic(dice_scores(50, 0.8))
    assert tuple(paired_bootstrap(same, mean_statistic(dice_scores(50, 0.8)), 50, 200)) == (
        0.0,
        0.0,
        0.0,
    )


def test_clearly_better_model_excludes_zero():
    good, bad = dice_scores(60, 0.85, seed=1), dice_scores(60, 0.75, seed=2)
    difference, low, high = paired_bootstrap(mean_statistic(good), mean_statistic(bad), 60, 500)
    assert difference == pytest.approx(good.mean() - bad.mean())
    assert 0 < low < difference < high
    # the reverse comparison mirrors it
    reverse = paired_bootstrap(mean_statistic(bad), mean_statistic(good), 60, 500)
    assert reverse.high < 0
    # classification: a skilled model against a near-random one on the same labels
    skilled, labels = classifier_outputs(skill=3.0)
    guessing, _ = classifier_outputs(skill=0.2, seed=1)
    for make in CLASSIFICATION_STATISTICS.values():
        result = paired_bootstrap(make(skilled, labels), make(guessing, labels), len(labels), 200)
        assert result.low > 0


def test_pairing_narrows_the_interval():
    # B = A - 0.02 plus small noise: the per-item pairing removes the between-image spread
    a = dice_scores(80, 0.8)
    b = a - 0.02 + np.random.default_rng(5).normal(0, 0.005, 80)
    paired = paired_bootstrap(mean_statistic(a), mean_statistic(b), 80, 300)
    alone = bootstrap_ci(mean_statistic(a), 80, 300)
    assert paired.low > 0 and paired.high - paired.low < 0.2 * (alone.high - alone.low)


def test_classification_statistics_match_torchmetrics_on_the_full_set():
    probs, labels = classifier_outputs(num_items=90, num_classes=4, skill=1.0)
    everything = np.arange(90)
    assert macro_f1_statistic(probs, labels)(everything) == pytest.approx(
        float(multiclass_f1_score(probs, labels, 4, average="macro"))
    )
    assert balanced_accuracy_statistic(probs, labels)(everything) == pytest.approx(
        float(multiclass_accuracy(probs, labels, 4, average="macro"))
    )
    assert macro_auroc_statistic(probs, labels)(everything) == pytest.approx(
        float(multiclass_auroc(probs, labels, 4, average="macro"))
    )
    # a resample repeating items: the metric of the repeated set
    indices = np.array([0, 0, 1, 2, 3, 3, 3, 5, 6, 7])
    assert balanced_accuracy_statistic(probs, labels)(indices) == pytest.approx(
        float(multiclass_accuracy(probs[indices], labels[indices], 4, average="macro"))
    )


def test_undefined_resamples_are_skipped_and_counted():
    # 20 items, class 2 only once: a resample misses it with probability (19/20)^20 ~ 36%
    probs, labels = classifier_outputs(num_items=20, num_classes=3, skill=1.0)
    labels = torch.where(labels == 2, 1, labels)
    labels[0] = 2
    statistic = macro_auroc_statistic(probs, labels)
    assert np.isnan(statistic(np.arange(1, 20)))  # class 2 missing
    with pytest.warns(UserWarning, match=r"resamples \(\d+%\) skipped"):
        result = bootstrap_ci(statistic, 20, num_samples=300)
    assert 60 < result.num_skipped < 160  # ~36% of 300
    assert result.low <= result.estimate <= result.high and np.isfinite(result.low)


def test_undefined_everywhere_or_on_full_set_is_an_error():
    with pytest.raises(ValueError, match="undefined on the full set"):
        bootstrap_ci(lambda indices: float("nan"), 10, 50)
    probs, labels = classifier_outputs(num_items=12, num_classes=3)
    labels[labels == 2] = 0  # class 2 absent: AUROC undefined on the full set
    with pytest.raises(ValueError, match="undefined on the full set"):
        bootstrap_ci(macro_auroc_statistic(probs, labels), 12, 50)
    # defined on the full set (all items) but not on any resample of it
    with pytest.raises(ValueError, match="undefined \\(NaN\\) on all 50 resamples"):
        bootstrap_ci(lambda i: 1.0 if len(set(i.tolist())) == 10 else float("nan"), 10, 50)


def test_bad_arguments():
    statistic = mean_statistic([0.5, 0.6])
    with pytest.raises(ValueError, match="num_items"):
        bootstrap_ci(statistic, 0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(statistic, 2, level=95)
    with pytest.raises(ValueError, match="num_samples"):
        paired_bootstrap(statistic, statistic, 2, num_samples=0)
    with pytest.raises(ValueError, match="finite per-item scores"):
        mean_statistic([0.5, float("nan")])
    with pytest.raises(ValueError, match="probs N x K"):
        macro_f1_statistic(torch.rand(5, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must lie"):
        macro_f1_statistic(torch.rand(2, 3), torch.tensor([0, 3]))


def test_the_interval_is_the_percentile_bootstrap_by_hand():
    # 300 resamples of 25 indices from default_rng(4), the statistic on each, and the 2.5th and
    # 97.5th percentiles (linear interpolation) of those where it is defined: class 2 occurs
    # once, so macro AUROC is undefined on the ~36% of resamples that miss it
    probs, labels = classifier_outputs(num_items=25, num_classes=3, skill=1.0)
    labels = torch.where(labels == 2, 1, labels)
    labels[0] = 2
    statistic = macro_auroc_statistic(probs, labels)
    values = np.array([statistic(i) for i in np.random.default_rng(4).integers(0, 25, (300, 25))])
    defined = values[np.isfinite(values)]
    with pytest.warns(UserWarning, match="skipped"):
        result = bootstrap_ci(statistic, 25, num_samples=300, seed=4)
    assert result.num_skipped == 300 - len(defined) > 50
    assert (result.low, result.high) == tuple(np.percentile(defined, [2.5, 97.5]))
    # a mean (vectorized): scipy's own percentile interval on the same resamples
    scores = dice_scores(25, 0.7)
    expected = scipy.stats.bootstrap(
        (scores,), np.mean, n_resamples=300, method="percentile", rng=np.random.default_rng(4)
    ).confidence_interval
    _, low, high = bootstrap_ci(mean_statistic(scores), 25, num_samples=300, seed=4)
    assert (low, high) == pytest.approx(tuple(expected), abs=1e-12)
    # one item (scipy needs two): every resample is that item
    assert tuple(bootstrap_ci(mean_statistic([0.4]), 1, num_samples=50)) == (0.4, 0.4, 0.4)


def test_multilabel_auroc_leaves_out_a_label_known_once():
    # label 2 is known on image 0 only: it has no AUROC, and a resample without image 0 has no
    # known entry of it at all (which torchmetrics' multilabel AUROC cannot take)
    generator = torch.Generator().manual_seed(3)
    target = (torch.rand(30, 3, generator=generator) > 0.5).long()
    target[:, 2] = -1
    target[0, 2] = 1
    probs = torch.rand(30, 3, generator=generator)
    auroc = classification_statistics(probs, target, multilabel=True)["auroc"]
    expected = np.mean([roc_auc_score(target[:, k], probs[:, k]) for k in range(2)])
    assert auroc(np.arange(30)) == pytest.approx(expected, abs=1e-6)
    result = bootstrap_ci(auroc, 30, num_samples=100)
    assert result.num_skipped == 0 and result.low <= expected <= result.high
