"""``medvision tune``: Optuna searches whose trials are ordinary fits, pruned, resumable, shared.

Every fit here is tiny (32-px synthetic lung slices, a resnet18 U-Net, two training batches).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna", reason="medvision tune needs the tune extra (optuna)")
pytest.importorskip("optuna_integration", reason="medvision tune needs optuna-integration")

from medvision.cli import main  # noqa: E402
from medvision.cli.crossval import parse_fit_config  # noqa: E402
from medvision.cli.tune.command import check_values  # noqa: E402
from medvision.cli.tune.search import check_keys, parse_parameter, read_search, short_names  # noqa: E402
from medvision.data.synthetic import write_lung_ct  # noqa: E402
from medvision.utils.files import read_csv  # noqa: E402

from .conftest import CONFIGS, REPO, load_benchmark, subprocess_env  # noqa: E402

SEARCH = {
    "model.init_args.optimizer.init_args.lr": {"float": [1.0e-4, 1.0e-2], "log": True},
    "model.init_args.encoder_name": {"choice": ["resnet18", "mobilenet_v2"]},
    "data.init_args.batch_size": {"int": [2, 4], "step": 2},
}
PNG = b"\x89PNG\r\n\x1a\n"


def write_yaml(path: Path, content: dict) -> Path:
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def tiny_config(tmp_path: Path, max_epochs: int = 1) -> Path:
    """A 32-px lung segmentation fit of one epoch (two batches) on 20 synthetic slices."""
    data_dir = tmp_path / "lung"
    if not data_dir.exists():
        write_lung_ct(data_dir, num_slices=20, size=32, seed=0)
    config = {
        "seed_everything": 0,
        "model": {
            "class_path": "medvision.models.SegmentationModule",
            "init_args": {
                "arch": "Unet",
                "encoder_name": "resnet18",
                "encoder_weights": None,
                "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.001}},
            },
        },
        "data": {
            "class_path": "medvision.data.LungCTDataModule",
            "init_args": {
                "data_dir": str(data_dir),
                "image_size": 32,
                "batch_size": 4,
                "num_workers": 0,
            },
        },
        "checkpoint": {"monitor": "val/dice", "mode": "max"},
        "trainer": {
            "max_epochs": max_epochs,
            "accelerator": "cpu",
            "limit_train_batches": 2,
            "limit_val_batches": 1,
            "num_sanity_val_steps": 0,
            "enable_progress_bar": False,
            "enable_model_summary": False,
        },
    }
    return write_yaml(tmp_path / "tiny.yaml", config)


def tune_args(tmp_path: Path, search: dict, output: Path, *extra: str) -> list[str]:
    search_file = write_yaml(tmp_path / "search.yaml", search)
    config = tiny_config(tmp_path)
    return ["--config", str(config), "--search", str(search_file), "--output", str(output), *extra]


def finished(rows: list[dict]) -> list[dict]:
    return [row for row in rows if row["state"] in ("COMPLETE", "PRUNED")]


@pytest.mark.slow
def test_three_trial_search_writes_table_best_config_and_plots(tmp_path, one_thread, capsys):
    output = tmp_path / "runs" / "lung"
    args = tune_args(tmp_path, SEARCH, output, "--trials", "3", "--seed", "0", "--study", "lung")
    main(["tune", *args])
    rows = read_csv(output / "trials.csv")
    assert [row["number"] for row in rows] == ["0", "1", "2"]
    assert {row["state"] for row in rows} == {"COMPLETE"}
    for row in rows:
        folder = output / f"trial_{row['number']}"
        assert row["folder"] == str(folder) and row["epochs"] == "1"
        assert (folder / "checkpoints" / "best.ckpt").is_file()
        config = yaml.safe_load((folder / "config.yaml").read_text())
        model = config["model"]["init_args"]
        assert model["encoder_name"] == row["model.init_args.encoder_name"]
        assert model["optimizer"]["init_args"]["lr"] == float(
            row["model.init_args.optimizer.init_args.lr"]
        )
        assert config["data"]["init_args"]["batch_size"] == int(row["data.init_args.batch_size"])
        logged = [float(r["val/dice"]) for r in read_csv(folder / "metrics.csv") if r["val/dice"]]
        assert float(row["value"]) == pytest.approx(max(logged))  # the trial's best val/dice

    best = max(rows, key=lambda row: float(row["value"]))
    best_yaml = yaml.safe_load((output / "best.yaml").read_text())
    assert best_yaml["model"]["init_args"]["encoder_name"] == best["model.init_args.encoder_name"]
    for name in ("optimization_history", "param_importances", "parallel_coordinate"):
        assert (output / f"{name}.png").read_bytes()[:8] == PNG
    printed = capsys.readouterr().out
    assert f"Best: trial {best['number']}, val/dice = {float(best['value']):.4f}" in printed

    main(["fit", "--config", str(output / "best.yaml")])  # best.yaml is runnable as it is
    refit = output / "best" / "version_0"
    assert (refit / "checkpoints" / "best.ckpt").is_file()
    refit_config = yaml.safe_load((refit / "config.yaml").read_text())
    assert refit_config["model"] == best_yaml["model"]

    (output / "trials.csv").unlink()  # --summary writes the same table from the storage alone
    main(["tune", "--study", "lung", "--output", str(output), "--summary"])
    assert read_csv(output / "trials.csv") == rows


@pytest.mark.slow
def test_median_pruner_cuts_the_trials_that_ascend_the_loss(tmp_path, one_thread):
    """``maximize: true`` makes Adam climb the loss: those trials fall below the median of the
    finished ones at their first validation and are stopped there, the others run every epoch."""
    search = {"model.init_args.optimizer.init_args.maximize": {"choice": [False, True]}}
    output = tmp_path / "runs" / "pruned"
    args = tune_args(tmp_path, search, output, "--trials", "4", "--seed", "0")
    learning = ["--model.init_args.optimizer.init_args.lr=0.003", "--trainer.limit_train_batches=4"]
    main(["tune", *args, "--startup-trials", "1", "--trainer.max_epochs=3", *learning])
    rows = read_csv(output / "trials.csv")
    pruned = [row for row in rows if row["state"] == "PRUNED"]
    assert len(finished(rows)) == 4 and pruned
    key = "model.init_args.optimizer.init_args.maximize"
    assert {row[key] for row in pruned} == {"True"}
    assert all(int(row["epochs"]) < 3 for row in pruned)
    assert all(row["epochs"] == "3" for row in rows if row[key] == "False")


@pytest.mark.slow
def test_wandb_trials_are_grouped_by_study_with_their_parameters(tmp_path, monkeypatch, one_thread):
    for variable in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login: offline
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    search = {"model.init_args.optimizer.init_args.lr": {"choice": [0.00123]}}
    output = tmp_path / "runs" / "grouped"
    args = tune_args(tmp_path, search, output, "--trials", "1", "--study", "grouped")
    main(["tune", *args, f"--config={CONFIGS / 'logger' / 'wandb.yaml'}"])
    runs = list((output / "trial_0" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    record = next(runs[0].glob("run-*.wandb")).read_bytes()
    assert b"grouped/trial_0" in record  # the run's name
    assert b'"tune"' in record and b"0.00123" in record  # the trial's parameters in its config
    assert b"\x07grouped" in record  # a protobuf string field that is exactly the study: the group


def run_tune(args: list[str], log: Path) -> subprocess.Popen:
    """``python -m medvision.cli tune ARGS`` in the background, its output into ``log``."""
    command = [sys.executable, "-m", "medvision.cli", "tune", *args]
    with open(log, "w") as handle:
        return subprocess.Popen(
            command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, env=subprocess_env()
        )


def wait_for(path: Path, process: subprocess.Popen, limit_s: float = 600) -> None:
    """Poll until ``path`` exists (the process is still running)."""
    end = time.monotonic() + limit_s
    while not path.exists():
        assert process.poll() is None, f"tune ended before {path} appeared"
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.1)


def finished_trials_in_log(log: Path) -> set[int]:
    """The trials a worker finished (complete or pruned), from its log lines."""
    return {int(n) for n in re.findall(r"Trial (\d+) (?:finished|pruned)", log.read_text())}


@pytest.mark.slow
def test_killed_tune_resumes_the_study_without_losing_or_repeating_trials(tmp_path):
    output = tmp_path / "runs" / "killed"
    args = tune_args(tmp_path, SEARCH, output, "--trials", "3", "--trainer.max_epochs", "6")
    first = run_tune(args, tmp_path / "first.log")
    wait_for(output / "trial_1" / "config.yaml", first)  # trial 0 finished, trial 1 training
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = run_tune(args, tmp_path / "second.log")
    assert second.wait() == 0, (tmp_path / "second.log").read_text()[-3000:]

    rows = read_csv(output / "trials.csv")
    states = {int(row["number"]): row["state"] for row in rows}
    assert states[0] == "COMPLETE" and states[1] == "FAIL"  # nothing finished lost
    assert len(finished(rows)) == 3 and len(rows) == 4  # the failed trial was replaced
    assert sorted(states) == [0, 1, 2, 3]  # no number twice
    assert finished_trials_in_log(tmp_path / "first.log") == {0}
    assert finished_trials_in_log(tmp_path / "second.log") == {2, 3}
    assert "Trial 1 was left running by process" in (tmp_path / "second.log").read_text()


def two_workers(tmp_path: Path, args: list[str], trials: int) -> list[set[int]]:
    """Two ``tune`` processes on one study at once; each one's finished trials."""
    logs = [tmp_path / f"worker_{i}.log" for i in range(2)]
    workers = [run_tune(args, log) for log in logs]
    for worker, log in zip(workers, logs, strict=True):
        assert worker.wait() == 0, log.read_text()[-3000:]
    return [finished_trials_in_log(log) for log in logs]


def assert_shared(output: Path, done: list[set[int]], trials: int) -> None:
    rows = read_csv(output / "trials.csv")
    numbers = [int(row["number"]) for row in rows]
    assert len(numbers) == len(set(numbers)) == trials
    assert len(finished(rows)) == trials
    assert not done[0] & done[1] and len(done[0]) + len(done[1]) == trials
    assert done[0] | done[1] == set(numbers)


@pytest.mark.slow
def test_two_workers_share_the_default_local_study(tmp_path):
    output = tmp_path / "runs" / "shared"
    args = tune_args(tmp_path, SEARCH, output, "--trials", "4")
    done = two_workers(tmp_path, args, 4)
    assert_shared(output, done, 4)
    assert (output / "study.journal").is_file()


@pytest.mark.slow
def test_ddp_trials_follow_rank_zero_and_are_pruned_together(tmp_path):
    """Two gloo CPU processes per trial: the second process follows rank 0 from trial to trial,
    and a trial pruned on rank 0 stops both (the pruning test's design, three trials)."""
    search = {"model.init_args.optimizer.init_args.maximize": {"choice": [False, True]}}
    output = tmp_path / "runs" / "ddp"
    storage = f"sqlite:///{tmp_path / 'study.db'}"  # DDP pruning needs a database storage
    args = tune_args(tmp_path, search, output, "--trials", "3", "--seed", "0", "--storage", storage)
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.max_epochs=3"]
    learning = ["--model.init_args.optimizer.init_args.lr=0.003", "--trainer.limit_train_batches=4"]
    command = [sys.executable, "-m", "medvision.cli", "tune", *args, "--startup-trials=1"]
    result = subprocess.run(
        [*command, *ddp, *learning], cwd=REPO, env=subprocess_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stderr.count("MEMBER: 2/2") == 1  # rank 1 joined once and followed rank 0
    rows = read_csv(output / "trials.csv")
    assert [row["number"] for row in rows] == ["0", "1", "2"]  # no trial asked by rank 1
    key = "model.init_args.optimizer.init_args.maximize"
    assert {row["state"] for row in rows if row[key] == "True" and row["number"] != "0"} == {
        "PRUNED"
    }
    assert all(int(row["epochs"]) < 3 for row in rows if row["state"] == "PRUNED")
    assert (output / "trial_2" / "config.yaml").is_file()


# --- PostgreSQL --------------------------------------------------------------------------------
def postgres_bin() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: on PATH, else the newest
    ``/usr/lib/postgresql/<version>/bin`` (where Debian's package puts them)."""
    found = shutil.which("initdb"), shutil.which("pg_ctl")
    if all(found):
        return Path(found[0]).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name)
    candidates = [p for p in versions if (p / "initdb").is_file() and (p / "pg_ctl").is_file()]
    return candidates[-1] if candidates else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server on a free port (as the ``postgres`` user when root); its
    database URL. Stopped and deleted afterwards; skipped where PostgreSQL is not installed."""
    pytest.importorskip("psycopg", reason="PostgreSQL studies need psycopg (the tune extra)")
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL not installed: no initdb/pg_ctl on PATH or in /usr/lib/postgresql")
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        runuser = shutil.which("runuser")
        if runuser is None or subprocess.run(["id", "postgres"], capture_output=True).returncode:
            pytest.skip("running as root without runuser and a postgres user to run the server")
        as_user = [runuser, "-u", "postgres", "--"]
    root = Path(tempfile_dir())
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if as_user:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    port = free_port()

    def pg(tool: str, *args: str) -> None:
        command = [*as_user, str(bin_dir / tool), *args]
        proc = subprocess.run(command, capture_output=True, text=True)
        assert proc.returncode == 0, f"{tool} failed: {proc.stdout}{proc.stderr}"

    pg("initdb", "-D", str(data), "-U", "medvision", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1"
    pg("pg_ctl", "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "start")
    try:
        pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "medvision", "tune")
        yield f"postgresql://medvision@127.0.0.1:{port}/tune"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"])
        shutil.rmtree(root, ignore_errors=True)


def tempfile_dir() -> str:
    """A new folder under /tmp that another user may enter (pytest's tmp_path may not be)."""
    import tempfile

    folder = tempfile.mkdtemp(prefix="medvision-postgres-")
    os.chmod(folder, 0o755)
    return folder


@pytest.mark.slow
def test_two_workers_share_one_postgresql_study(tmp_path, postgres_url):
    output = tmp_path / "runs" / "postgres"
    args = tune_args(tmp_path, SEARCH, output, "--trials", "4", "--storage", postgres_url)
    done = two_workers(tmp_path, args, 4)
    assert_shared(output, done, 4)
    assert not (output / "study.journal").exists()  # the study is in the database
    study = optuna.load_study(study_name="tiny_tune", storage=postgres_url)
    assert len(study.trials) == 4


# --- bad input: one line each, before any training ---------------------------------------------
@pytest.mark.parametrize(
    ("search", "message"),
    [
        (
            {"model.init_args.encoder_nme": {"choice": ["resnet18"]}},
            "model.init_args.encoder_nme is not a setting of this config "
            "(see medvision fit --print_config). Did you mean model.init_args.encoder_name?",
        ),
        (
            {"model.init_args.optimizer.init_args.lr": {"float": [1.0e-2, 1.0e-4]}},
            "model.init_args.optimizer.init_args.lr: the range [0.01, 0.0001] is empty",
        ),
        ({"model.init_args.encoder_name": {"choice": []}}, "the choice list is empty"),
        (
            {"data.init_args.batch_size": {"int": [2.5, 8]}},
            "data.init_args.batch_size: int bounds must be integers, got 2.5 (float)",
        ),
        (
            {"data.init_args.batch_size": {"float": [2.0, 8.0]}},
            "--data.init_args.batch_size: Expected a <class 'int'>. Got value: 2.0",
        ),
    ],
    ids=["unknown-key", "empty-range", "empty-choice", "wrong-bound-type", "wrong-value-type"],
)
def test_bad_search_is_one_line_before_training(tmp_path, monkeypatch, capsys, search, message):
    monkeypatch.delenv("MEDVISION_DEBUG")
    output = tmp_path / "runs" / "bad"
    with pytest.raises(SystemExit) as stopped:
        main(["tune", *tune_args(tmp_path, search, output)])
    assert stopped.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ERROR")]
    assert message in errors[0] and "search.yaml" in errors[0]
    assert len(errors) <= 2 and not output.exists()  # the error and the --debug hint; no trial


def test_unreachable_storage_is_one_line_before_training(tmp_path, monkeypatch, capsys):
    pytest.importorskip("psycopg", reason="PostgreSQL studies need psycopg (the tune extra)")
    monkeypatch.delenv("MEDVISION_DEBUG")
    output = tmp_path / "runs" / "nowhere"
    port = free_port()  # nothing listens there
    url = f"postgresql://medvision:secret@127.0.0.1:{port}/tune"
    with pytest.raises(SystemExit):
        main(["tune", *tune_args(tmp_path, SEARCH, output, "--storage", url)])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ERROR")]
    hidden = f"postgresql://medvision:***@127.0.0.1:{port}/tune"
    assert f"--storage {hidden}: cannot connect (" in errors[0]
    assert "refused" in errors[0]  # the server's answer, not a missing driver
    assert "secret" not in errors[0] and not output.exists()


def test_timeout_stops_starting_trials(tmp_path, caplog):
    output = tmp_path / "runs" / "late"
    with caplog.at_level("INFO", logger="medvision.cli.tune.worker"):
        main(["tune", *tune_args(tmp_path, SEARCH, output, "--timeout", "0")])
    assert "--timeout 0.0 s reached: no new trial started." in caplog.text
    assert not list(output.glob("trial_*")) and (output / "study.journal").is_file()


def test_search_entries_are_parsed_and_checked():
    lr = parse_parameter("--model.init_args.lr", {"float": [1.0e-4, 1.0e-2], "log": True})
    assert (lr.key, lr.kind, lr.low, lr.high, lr.log) == (
        "model.init_args.lr",
        "float",
        1e-4,
        1e-2,
        True,
    )
    size = parse_parameter("data.init_args.batch_size", {"int": [8, 32], "step": 8})
    assert (size.low, size.high, size.step, size.corners()) == (8, 32, 8, [8, 32])
    for spec, message in [
        ({"float": [1, 2], "int": [1, 2]}, "exactly one of float, int or choice"),
        ({"float": "1e-4"}, "float takes [low, high]"),
        ({"float": ["1e-4", 1.0]}, "YAML reads 1e-4 as text, write 1.0e-4"),
        ({"float": [0.0, 1.0], "log": True}, "a log range needs low > 0"),
        ({"int": [1, 8], "step": 0}, "step must be a positive integer"),
        ({"choice": [1, [2]]}, "choices must be strings, numbers, booleans or null"),
        ({"choice": [1, 1]}, "repeats a value"),
        ({"float": [1.0, 2.0], "steps": 2}, "unknown option ['steps'] for float"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_parameter("x.y", spec, "search.yaml")
    assert short_names(["a.init_args.lr", "b.init_args.lr", "c.encoder_name"]) == {
        "a.init_args.lr": "a.init_args.lr",
        "b.init_args.lr": "b.init_args.lr",
        "c.encoder_name": "encoder_name",
    }


@pytest.mark.parametrize("path", sorted((CONFIGS / "search").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_search_files_fit_their_configs(path):
    """``configs/search/<name>.yaml`` searches settings that ``configs/<name>.yaml`` has, with
    values those settings take."""
    fit_args = ["--config", str(CONFIGS / path.name)]
    parameters = read_search(path)
    check_keys(parameters, parse_fit_config(fit_args), path)
    check_values(parameters, fit_args, path)


@pytest.mark.slow
def test_tuning_benchmark_writes_its_table_and_plots(tmp_path):
    """benchmarks/tuning.py on synthetic slices, in two short trials: the docs block and plots."""
    data_dir = tmp_path / "lung"
    write_lung_ct(data_dir, num_slices=20, size=64, seed=0)
    page = tmp_path / "docs" / "tuning.md"
    page.parent.mkdir()
    page.write_text("# page\n\n<!-- tuning-table:start -->\n<!-- tuning-table:end -->\n")
    script = load_benchmark(REPO / "benchmarks" / "tuning.py")
    quick = ["--trials", "2", "--epochs", "1", "--image-size", "32", "--startup-trials", "1"]
    paths = ["--output", str(tmp_path / "study"), "--docs", str(page)]
    script.main(["--data-dir", str(data_dir), *quick, *paths])
    text = page.read_text()
    rows = read_csv(tmp_path / "study" / "trials.csv")
    assert len(rows) == 2 and "Machine: " in text and "Smoke run" in text
    for row in rows:
        assert f"| {row['number']} | {row['state']} |" in text
    assert (page.parent / "figures" / "tuning_optimization_history.png").read_bytes()[:8] == PNG
