"""``medvision-report`` with bootstrap intervals and paired differences (issue 21)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medvision.cli import main as medvision
from medvision.cli.compare import main
from medvision.cli.compare.paired import format_difference, matched_rows, paired_differences
from medvision.cli.compare.report import paired_section
from medvision.cli.compare.runs import Run
from medvision.evaluation.summary import format_interval
from medvision.utils.files import read_csv

from .conftest import chest_run_args

QUICK = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.num_sanity_val_steps=0",
]
HEADLINE = ["test/auroc", "test/balanced_accuracy", "test/ece", "test/f1"]


pytestmark = pytest.mark.usefixtures("one_thread")


def table_row(report: str, first_cell: str, after: str = "") -> list[str]:
    """The cells of the first Markdown table row starting with ``first_cell`` after ``after``."""
    for line in (report.split(after, 1)[-1] if after else report).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row {first_cell!r} in the report")


@pytest.mark.slow
def test_report_prints_intervals_and_paired_differences(tmp_path, chest_dir, capsys):
    medvision(["fit", *chest_run_args(tmp_path / "a", chest_dir, *QUICK)])
    medvision(["fit", *chest_run_args(tmp_path / "b", chest_dir, *QUICK, "--seed_everything=7")])
    run_a = tmp_path / "a" / "version_0"
    run_b = tmp_path / "b" / "version_0"
    out = tmp_path / "report"
    main(
        [
            str(run_a),
            str(run_b),
            str(run_a / "checkpoints" / "best.ckpt"),  # A again: a difference of exactly 0
            "--names",
            "A",
            "B",
            "A2",
            "--output",
            str(out),
            "--bootstrap-samples",
            "200",
        ]
    )
    printed = capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert report in printed
    summaries = [
        {
            f"test/{r['metric']}": r
            for r in read_csv(out / "evaluation" / f"run_{i}" / "test_summary.csv")
        }
        for i in range(3)
    ]
    for key in HEADLINE:
        cells = table_row(report, key)
        assert cells[1:] == [format_interval(s[key]) for s in summaries]
        assert cells[1].count("[") == 1 and cells[1] == cells[3]
    assert table_row(report, "test/accuracy")[1].count("[") == 0  # no interval: the value

    assert table_row(report, "metric", "## Paired difference vs A") == ["metric", "B − A", "A2 − A"]
    for key in HEADLINE:
        cells = table_row(report, key, "## Paired difference vs A")
        assert cells[2] == "+0.0000 [+0.0000, +0.0000]"  # the same model on the same images
        difference = float(cells[1].split(" [")[0])
        a, b = (float(summaries[i][key]["value"]) for i in (0, 1))
        assert difference == pytest.approx(b - a, abs=2e-4)  # probabilities kept to 6 decimals
        low, high = (float(v) for v in cells[1].split("[")[1].split("]")[0].split(", "))
        assert low <= difference <= high or key == "test/ece"  # ECE's bootstrap is biased


def classifier_rows(images, labels, probs):
    return [
        {"image": image, "label": label, "pred": "", "prob_x": p, "prob_y": 1 - p}
        for image, label, p in zip(images, labels, probs, strict=True)
    ]


def test_paired_differences_of_hand_made_runs(tmp_path):
    # segmenters: B's Dice is A's + 0.05 on every image; an infinite HD95 is left out
    base = [
        {"image": f"/d/{i}.png", "mask": "", "dice": d, "hd95": "inf"}
        for i, d in enumerate([0.8, 0.9, 0.7])
    ]
    other = [dict(r, dice=str(float(r["dice"]) + 0.05), hd95="1.0") for r in reversed(base)]
    rows_a, rows_b = matched_rows(base, other, "A", "B")
    assert [r["image"] for r in rows_a] == [r["image"] for r in rows_b]
    found = paired_differences(rows_a, rows_b, num_samples=100)
    assert list(found) == ["test/dice"]
    difference, low, high = found["test/dice"]
    assert difference == pytest.approx(0.05) and low == pytest.approx(0.05)
    assert format_difference(found["test/dice"]) == "+0.0500 [+0.0500, +0.0500] *"
    assert format_difference((0.01, -0.02, 0.03)) == "+0.0100 [-0.0200, +0.0300]"

    # classifiers: labels must agree; different image sets are refused, naming both runs
    a = classifier_rows(
        ["/d/1.png", "/d/2.png", "/d/3.png", "/d/4.png"], list("xyxy"), [0.9, 0.2, 0.6, 0.4]
    )
    b = classifier_rows(
        ["/d/1.png", "/d/2.png", "/d/3.png", "/d/4.png"], list("xyxy"), [0.9, 0.8, 0.6, 0.4]
    )
    found = paired_differences(a, b, num_samples=100)
    assert set(found) == {"test/f1", "test/balanced_accuracy", "test/auroc", "test/ece"}
    assert found["test/balanced_accuracy"][0] == pytest.approx(-0.25)  # B gets image 2 wrong
    with pytest.raises(ValueError, match="different labels"):
        paired_differences(a, classifier_rows([r["image"] for r in a], list("xxxy"), [0.5] * 4))
    elsewhere = classifier_rows(
        ["/e/1.png", "/d/2.png", "/d/3.png", "/d/4.png"], list("xyxy"), [0.5] * 4
    )
    with pytest.raises(ValueError, match=r"B and A were tested on different images \(1 only in A"):
        matched_rows(a, elsewhere, "A", "B")

    runs = [Run(Path(n), Path(n), Path(n), name=n) for n in ("A", "B", "CV")]
    runs[0].per_image, runs[1].per_image = a, elsewhere
    runs[2].num_folds = 3
    section = "\n\n".join(paired_section(runs, num_samples=50))
    assert "B: not compared. B and A were tested on different images" in section
    assert "same test data (--data.init_args.data_dir DIR" in section
    assert "CV: no per-image results (a cross-validation), left out." in section
    runs[0].per_image, runs[0].num_folds = None, 3
    assert "Not computed: A is a cross-validation" in paired_section(runs)[1]
