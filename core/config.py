"""The run-config vocabulary: declared keys, parsing, and the one-line error.

Each plug-in declares the keys it reads beside its code (a ``KEYS`` mapping of
:class:`Key`); the apps merge the declarations and call :func:`load` once, at start.
Flower hands the ServerApp a flat mapping with dashed keys (``[tool.flwr.app.config]``
plus ``--run-config`` overrides); :func:`load` turns it into a :class:`RunConfig` or
raises :class:`ConfigError` with one line naming the bad key and what is accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any


class ConfigError(ValueError):
    """A run-config value that cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class Key:
    """One run-config key: its default (whose type is the key's type) and what it accepts.

    ``accepted`` is a tuple of allowed values; ``low`` / ``high`` bound a number
    (``low_open``: low excluded). ``meaning`` is its line in docs/configuration.md and in
    ``spikefed config`` (Markdown). ``client``: a ClientApp reads it, so the messages to the
    clients carry it (the others stay on the server).
    """

    default: Any
    accepted: tuple | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    meaning: str = ""
    client: bool = False

    def parse(self, name: str, value: Any) -> Any:
        value = coerce(name, value, self.default)
        if self.accepted is not None and value not in self.accepted:
            raise ConfigError(f"{name}={value!r} is unknown; accepted: {', '.join(map(str, self.accepted))}")
        check_range(name, value, self.low, self.high, self.low_open)
        return value


def choice(default: str, accepted: tuple, meaning: str = "", client: bool = False) -> Key:
    return Key(default, accepted=accepted, meaning=meaning, client=client)


def at_least(default: float, low: float, high: float | None = None, meaning: str = "", client: bool = False) -> Key:
    return Key(default, low=low, high=high, meaning=meaning, client=client)


def above(default: float, low: float, high: float | None = None, meaning: str = "", client: bool = False) -> Key:
    return Key(default, low=low, high=high, low_open=True, meaning=meaning, client=client)


def share(default: float, meaning: str = "") -> Key:
    """A fraction in [0, 1]."""
    return Key(default, low=0, high=1, meaning=meaning)


def read_by_clients(keys: Mapping[str, Key]) -> dict[str, Key]:
    """``keys``, each marked as one a ClientApp reads."""
    return {name: replace(key, client=True) for name, key in keys.items()}


class RunConfig(Mapping):
    """A validated run config: ``cfg["num-partitions"]`` or ``cfg.num_partitions``."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)
        self._hash = hash(tuple(sorted(self._values.items())))

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name.replace("_", "-")]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __hash__(self) -> int:  # data loaders cache by config
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunConfig) and self._values == other._values

    def __repr__(self) -> str:
        return f"RunConfig({self._values!r})"

    def to_mapping(self) -> dict[str, Any]:
        """The dashed-key mapping (what Flower's run config and ConfigRecord hold)."""
        return dict(self._values)

    def for_clients(self, keys: Mapping[str, Key]) -> dict[str, Any]:
        """The mapping of the ``keys`` a ClientApp reads (:attr:`Key.client`): what a message's config carries."""
        return {name: value for name, value in self._values.items() if keys[name].client}

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes`` (underscored names), unvalidated: for values already checked."""
        return RunConfig({**self._values, **{k.replace("_", "-"): v for k, v in changes.items()}})


def coerce(key: str, value: Any, default: Any) -> Any:
    """Convert ``value`` to the type of ``default`` (TOML and CLI give str/int/float/bool)."""
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{key}={value!r} is not a boolean; accepted: true or false")
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{key}={value!r} is not an integer")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r} is not an integer") from None
    if kind is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} is not a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r} is not a number") from None
    return str(value)


def check_range(key: str, value: float, low: float | None, high: float | None, low_open: bool = False) -> None:
    """ConfigError unless ``value`` lies in [low, high] (or (low, high] when ``low_open``)."""
    if low is None and high is None:
        return
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        left = ("(" if low_open else "[") + (f"{low}" if low is not None else "-inf")
        right = f"{high}]" if high is not None else "inf)"
        raise ConfigError(f"{key}={value} is out of range; accepted: {left}, {right}")


def load(values: Mapping[str, Any], keys: Mapping[str, Key],
         checks: Iterable[Callable[[RunConfig], None]] = (), ignored: Iterable[str] = ()) -> RunConfig:
    """Merge ``values`` over the ``keys``' defaults, parse each, run the cross-key ``checks``.

    Keys in ``ignored`` (e.g. a message's own config keys) are dropped.
    """
    ignored = set(ignored)
    unknown = sorted(set(values) - set(keys) - ignored)
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r}; accepted keys: {', '.join(sorted(keys))}")
    cfg = RunConfig({name: key.parse(name, values.get(name, key.default)) for name, key in keys.items()})
    for check in checks:
        check(cfg)
    return cfg
