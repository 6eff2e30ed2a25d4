"""Where a study lives, who may start its next trial, and which running trials are orphans.

- :func:`open_storage`: the default is Optuna's ``JournalStorage`` on a file inside the
  study's folder (``study.journal``), written under a file lock, which several ``tune``
  processes on one machine share safely; ``--storage URL`` is an ``RDBStorage`` (PostgreSQL
  or MySQL for several machines, SQLite for one) with Optuna's heartbeat, so that a trial
  whose machine died is failed by the next worker after :data:`GRACE_S` seconds.
- :func:`study_lock`: one process at a time counts the trials and asks for a new one, so that
  workers never start more trials than asked for: a lock file for local storages, a
  PostgreSQL advisory lock or a MySQL named lock for a database.
- :func:`fail_orphans`: a running trial whose process (on this machine) has ended, killed
  mid-trial, is marked ``FAIL``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

log = logging.getLogger(__name__)

#: The default storage's file, in the study's folder.
JOURNAL = "study.journal"
#: The lock file of a local storage, beside it.
LOCK = "tune.lock"
#: The system attribute of a trial naming the process that runs it.
OWNER = "medvision:owner"
#: RDB storages: seconds between a running trial's heartbeats, and after the last one until
#: another worker fails the trial.
HEARTBEAT_S, GRACE_S = 30, 120
#: The database dialects whose locks :func:`study_lock` knows.
DIALECTS = ("postgresql", "mysql", "sqlite")


def dialect(url: str | None) -> str | None:
    """``postgresql``, ``mysql`` or ``sqlite`` for a storage URL (its driver dropped), None for
    the default journal file.

    Args:
        url: The ``--storage`` URL, or None.

    Raises:
        ValueError: A URL of another kind.
    """
    if url is None:
        return None
    scheme = url.partition("://")[0].split("+")[0]
    if "://" not in url or scheme not in DIALECTS:
        raise ValueError(
            f"--storage {hide_password(url)}: expected a postgresql://, mysql:// or sqlite:/// "
            "URL (or no --storage: a journal file in the study's folder)"
        )
    if scheme == "sqlite" and url.rstrip("/") in ("sqlite:", "sqlite:/"):
        raise ValueError("--storage sqlite://: an in-memory study is lost at exit; give a file")
    return scheme


def hide_password(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages).

    Args:
        url: A storage URL.
    """
    head, at, tail = url.rpartition("@")
    if not at or ":" not in head.partition("://")[2]:
        return url
    scheme, _, credentials = head.partition("://")
    return f"{scheme}://{credentials.partition(':')[0]}:***@{tail}"


def open_storage(url: str | None, folder: Path) -> optuna.storages.BaseStorage:
    """The study's storage: a journal file in ``folder``, or the database at ``url``.

    Connects at once, so that a URL that cannot be reached stops ``tune`` before training. A
    ``postgresql://`` URL uses the psycopg (3) driver, which the ``tune`` extra installs
    (SQLAlchemy 2.0 would pick psycopg2); ``postgresql+psycopg2://`` chooses that one.

    Args:
        url: The ``--storage`` URL; None: ``<folder>/study.journal``.
        folder: The study's folder (made if missing).

    Raises:
        ValueError: One line naming the URL and why it cannot be used.
    """
    kind = dialect(url)
    if kind is None:
        folder.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(folder / JOURNAL)))
    shown = hide_password(url)
    if url.startswith("postgresql://"):  # the driver the tune extra installs (psycopg 3)
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = {"connect_args": {"connect_timeout": 10}} if kind in ("postgresql", "mysql") else {}
    try:
        # workers started together on a new database would race to create Optuna's tables
        with _creating_tables(url, kind, engine), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat
            return RDBStorage(
                url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S
            )
    except ImportError as error:  # Optuna's, from the driver's ModuleNotFoundError
        missing = getattr(error.__cause__, "name", None) or getattr(error, "name", None)
        raise ValueError(
            f"--storage {shown}: its database driver ({missing}) is not installed: "
            "pip install 'medvision-lightning[tune]' (PostgreSQL), or a driver for the URL"
        ) from None
    except Exception as error:  # sqlalchemy's OperationalError and friends, one line of it
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise ValueError(f"--storage {shown}: cannot connect ({reason})") from None


@contextlib.contextmanager
def _creating_tables(url: str, kind: str, engine_kwargs: dict) -> Iterator[None]:
    """Hold a database-wide lock (PostgreSQL, MySQL) while Optuna creates its tables."""
    if kind == "sqlite":
        yield
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, **engine_kwargs)
    try:
        with engine.connect() as connection, _held(connection, "medvision-tune:tables"):
            yield
    finally:
        engine.dispose()


@contextlib.contextmanager
def _held(connection, name: str) -> Iterator[None]:
    """Hold the named lock of a PostgreSQL (advisory) or MySQL (``GET_LOCK``) session."""
    from sqlalchemy import text

    key = zlib.crc32(name.encode())
    if connection.dialect.name == "postgresql":
        take, give = "SELECT pg_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)"
    else:
        take = "SELECT GET_LOCK(CAST(:key AS CHAR), -1)"
        give = "SELECT RELEASE_LOCK(CAST(:key AS CHAR))"
    connection.execute(text(take), {"key": key})
    try:
        yield
    finally:
        connection.execute(text(give), {"key": key})
        connection.commit()


@contextlib.contextmanager
def study_lock(storage, folder: Path, study_name: str) -> Iterator[None]:
    """Hold the study's lock: one worker at a time counts trials and starts the next one.

    Args:
        storage: What :func:`open_storage` returned.
        folder: The study's folder (the lock file of a journal storage lies there).
        study_name: The study (the database lock's name).
    """
    if not isinstance(storage, RDBStorage) or storage.engine.dialect.name == "sqlite":
        path = folder / LOCK
        if isinstance(storage, RDBStorage):
            path = Path(f"{storage.engine.url.database}.tune-lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    with storage.engine.connect() as connection, _held(connection, f"medvision-tune:{study_name}"):
        yield


def owner() -> dict:
    """This process: ``{"host", "pid", "start"}`` (``start``: its start time, to tell a reused
    process number from the process itself; None where ``/proc`` is missing)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _process_start(pid)}


def _process_start(pid: int) -> str | None:
    try:  # field 22 of /proc/<pid>/stat: start time in clock ticks after boot
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


def owner_alive(record: dict) -> bool:
    """Whether the process a trial's owner record names still runs (True when it is on
    another machine: Optuna's heartbeat fails those, with an RDB storage).

    Args:
        record: What :func:`owner` returned in the trial's process.
    """
    if record.get("host") != socket.gethostname():
        return True
    pid = int(record["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = record.get("start")
    return start is None or _process_start(pid) == start


def fail_orphans(study: optuna.Study) -> list[int]:
    """Mark ``FAIL`` every running trial whose process ended (killed mid-trial); call it under
    the study's lock (:func:`study_lock`). Stale trials of other machines are failed by
    Optuna's heartbeat check.

    Args:
        study: The study.

    Returns:
        The numbers of the trials marked failed.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        record = trial.system_attrs.get(OWNER)
        if record is None or owner_alive(record):
            continue
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            if study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                failed.append(trial.number)
                log.warning(
                    "Trial %d was left running by process %s, which has ended (killed?): "
                    "marked FAIL; another trial takes its place.",
                    trial.number,
                    record["pid"],
                )
    return failed


@contextlib.contextmanager
def heartbeat(storage, trial_id: int) -> Iterator[None]:
    """Record the trial's heartbeat every :data:`HEARTBEAT_S` seconds while it runs (RDB
    storages; the journal file has none and does nothing here).

    Args:
        storage: What :func:`open_storage` returned.
        trial_id: The trial's storage id.
    """
    if not isinstance(storage, RDBStorage):
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if stop.wait(HEARTBEAT_S):
                return

    thread = threading.Thread(target=beat, name=f"optuna-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
