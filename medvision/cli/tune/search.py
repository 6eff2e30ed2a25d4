"""The search file: CLI keys mapped to ranges, read and checked before the first trial.

One YAML mapping, each key a ``medvision fit`` option (dotted, as on the command line) and each
value one of three forms::

    model.init_args.optimizer.init_args.lr: {float: [1.0e-4, 1.0e-2], log: true}
    model.init_args.encoder_name: {choice: [resnet18, resnet34]}
    data.init_args.batch_size: {int: [8, 32], step: 8}

``float`` and ``int`` take ``[low, high]`` (both included) and optionally ``log: true`` or a
``step``; ``choice`` takes a non-empty list of scalars (strings, numbers, booleans, null).
Every problem raises a ``ValueError`` of one line that names the file and the key.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace

KINDS = ("float", "int", "choice")
OPTIONS = {"float": {"log", "step"}, "int": {"log", "step"}, "choice": set()}


@dataclass(frozen=True)
class Parameter:
    """One searched option: its CLI key and its range.

    Attributes:
        key: The dotted ``medvision fit`` key (``data.init_args.batch_size``).
        kind: ``float``, ``int`` or ``choice``.
        low: The lowest value (``float``/``int``), else None.
        high: The highest value, included (``float``/``int``), else None.
        log: Sample on a log scale (``float``/``int``).
        step: The spacing of the values (``float``/``int``), None: any value.
        choices: The values of a ``choice``, else empty.
    """

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        """This parameter's value for an Optuna trial (``trial.suggest_*`` under ``key``).

        Args:
            trial: An ``optuna.trial.Trial``.
        """
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        suggest = trial.suggest_int if self.kind == "int" else trial.suggest_float
        return suggest(self.key, self.low, self.high, log=self.log, **self._step())

    def _step(self) -> dict:
        return {} if self.step is None else {"step": self.step}

    def corners(self) -> list:
        """The values a trial may take at the edges: both bounds, or every choice."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]


def read_search(path: str | Path) -> list[Parameter]:
    """The parameters of a search file, in its order.

    Args:
        path: The YAML file (see the module's docstring for its form).

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: One line naming the file, the key and what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--search {path}: no such file")
    try:
        entries = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(entries, dict) or not entries:
        raise ValueError(
            f"{path}: expected a mapping of CLI keys to ranges, e.g. "
            "'model.init_args.optimizer.init_args.lr: {float: [1.0e-4, 1.0e-2], log: true}'"
        )
    return [parse_parameter(str(key), spec, path) for key, spec in entries.items()]


def parse_parameter(key: str, spec: Any, path: str | Path = "search") -> Parameter:
    """One entry of a search file as a :class:`Parameter`.

    Args:
        key: The CLI key (``--`` in front is allowed and dropped).
        spec: Its range: ``{float: [lo, hi], ...}``, ``{int: [lo, hi], ...}`` or
            ``{choice: [...]}``.
        path: The file, for the error message.

    Raises:
        ValueError: One line naming the file, the key and what is wrong.
    """
    key = key.removeprefix("--")
    where = f"{path}: {key}"
    kinds = [kind for kind in KINDS if isinstance(spec, dict) and kind in spec]
    if len(kinds) != 1:
        raise ValueError(
            f"{where}: give exactly one of float, int or choice, e.g. "
            "{float: [1.0e-4, 1.0e-2], log: true}, {int: [8, 32], step: 8} or "
            f"{{choice: [resnet18, resnet34]}}; got {spec!r}"
        )
    kind = kinds[0]
    unknown = set(spec) - {kind} - OPTIONS[kind]
    if unknown:
        allowed = ", ".join(sorted(OPTIONS[kind])) or "none"
        raise ValueError(
            f"{where}: unknown option {sorted(unknown)} for {kind} (allowed: {allowed})"
        )
    if kind == "choice":
        return Parameter(key, kind, choices=_choices(spec["choice"], where))
    low, high = _bounds(spec[kind], kind, where)
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise ValueError(f"{where}: log must be true or false, got {log!r}")
    if step is not None:
        _check_step(step, kind, low, high, where)
        if log:
            raise ValueError(f"{where}: give either log: true or a step, not both")
    if log and low <= 0:
        raise ValueError(f"{where}: a log range needs low > 0, got [{low}, {high}]")
    return Parameter(key, kind, low=low, high=high, log=log, step=step)


def _bounds(bounds: Any, kind: str, where: str) -> tuple:
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise ValueError(f"{where}: {kind} takes [low, high], got {bounds!r}")
    numeric = (int,) if kind == "int" else (int, float)
    for value in bounds:
        if isinstance(value, bool) or not isinstance(value, numeric):
            wanted = "integers" if kind == "int" else "numbers"
            raise ValueError(
                f"{where}: {kind} bounds must be {wanted}, got {value!r} "
                f"({type(value).__name__}); YAML reads 1e-4 as text, write 1.0e-4"
            )
        if not math.isfinite(value):
            raise ValueError(f"{where}: {kind} bounds must be finite, got {value!r}")
    low, high = bounds
    if low > high:
        raise ValueError(f"{where}: the range [{low}, {high}] is empty (low above high)")
    return (float(low), float(high)) if kind == "float" else (low, high)


def _check_step(step: Any, kind: str, low: float, high: float, where: str) -> None:
    numeric = (int,) if kind == "int" else (int, float)
    if isinstance(step, bool) or not isinstance(step, numeric) or step <= 0:
        wanted = "a positive integer" if kind == "int" else "a positive number"
        raise ValueError(f"{where}: step must be {wanted}, got {step!r}")


def _choices(values: Any, where: str) -> tuple:
    if not isinstance(values, list):
        raise ValueError(f"{where}: choice takes a list, got {values!r}")
    if not values:
        raise ValueError(f"{where}: the choice list is empty")
    for value in values:
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ValueError(
                f"{where}: choices must be strings, numbers, booleans or null, got {value!r}"
            )
    if len(set(map(repr, values))) != len(values):
        raise ValueError(f"{where}: the choice list repeats a value: {values!r}")
    return tuple(values)


def check_keys(parameters: list[Parameter], config: Namespace, path: str | Path) -> None:
    """Refuse a searched key that the resolved ``fit`` config does not have, naming it.

    Args:
        parameters: The search's parameters.
        config: The parsed ``fit`` config (``medvision.cli.crossval.parse_fit_config``).
        path: The search file, for the message.

    Raises:
        ValueError: For the first unknown key, with the closest key the config has.
    """
    known = set(flat_keys(config))
    for parameter in parameters:
        if parameter.key in known:
            continue
        close = difflib.get_close_matches(parameter.key, known, n=1, cutoff=0.8)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise ValueError(
            f"{path}: {parameter.key} is not a setting of this config "
            f"(see medvision fit --print_config).{hint}"
        )


def flat_keys(config: Namespace, prefix: str = "") -> list[str]:
    """Every dotted leaf key of a parsed config (``model.init_args.encoder_name``, ...).

    Args:
        config: A jsonargparse ``Namespace``.
        prefix: The keys' common beginning (for the recursion).
    """
    keys = []
    for name, value in vars(config).items():
        key = f"{prefix}{name}"
        if isinstance(value, Namespace):
            keys += flat_keys(value, f"{key}.")
        else:
            keys.append(key)
    return keys


def fit_arguments(values: dict[str, Any]) -> list[str]:
    """The ``medvision fit`` arguments that set each key to its value (``--key=value``).

    Args:
        values: Key to value (a trial's parameters).
    """
    return [f"--{key}={_text(value)}" for key, value in values.items()]


def _text(value: Any) -> str:
    # a string as it is (a str option keeps quotes); numbers, booleans and null as YAML reads them
    return value if isinstance(value, str) else json.dumps(value)


def short_names(keys: list[str]) -> dict[str, str]:
    """For each key, its shortest dotted tail that no other key ends with (``lr``).

    Args:
        keys: Dotted keys.
    """
    names = {}
    for key in keys:
        parts = key.split(".")
        for size in range(1, len(parts) + 1):
            tail = ".".join(parts[-size:])
            if not any(other != key and other.endswith("." + tail) for other in keys):
                names[key] = tail
                break
    return names
