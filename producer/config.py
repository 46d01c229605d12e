"""The daemon's TOML configuration, read into small frozen objects.

Every table and key is checked: an unknown key, a missing one or a value of the
wrong type is a :class:`ConfigurationError` naming the file and the key
(``feed[1].max_change_ratio``). The ``[catalog]`` table is the exception: its keys
go as-is to ``pyiceberg.catalog.load_catalog(name, **props)``. The format is
documented in the README ("Producer daemon").
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedkit import names
from feedkit.errors import ConfigurationError

from .settings import ProducerSettings, SettingsError

__all__ = ["CatalogConfig", "DaemonConfig", "FeedConfig", "MetricsConfig", "StoreConfig",
           "load_config", "parse_config"]


@dataclass(frozen=True)
class StoreConfig:
    url: str
    options: dict[str, Any] = field(default_factory=dict)  # passed to open_store


@dataclass(frozen=True)
class CatalogConfig:
    name: str
    properties: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class FeedConfig(ProducerSettings):
    """A ``[[feed]]``: the producer's settings (validated by :class:`ProducerSettings`)
    and what the daemon needs besides: the table, its columns, the poll interval and the
    validators by name."""

    table: str
    columns: tuple[str, ...] | None = None
    poll_interval: float = 5.0
    validators: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (type(self.poll_interval) in (int, float) and self.poll_interval > 0):
            raise SettingsError(self.feed, "poll_interval", f"must be > 0, not "
                                                            f"{self.poll_interval!r}")

    @property
    def name(self) -> str:
        """The feed's name (``name`` in the TOML)."""
        return self.feed


@dataclass(frozen=True)
class DaemonConfig:
    store: StoreConfig
    catalog: CatalogConfig
    feeds: tuple[FeedConfig, ...]
    work_dir: Path | None = None  # [producer] work_dir: per-feed state kept across restarts
    compression_level: int = 3
    source: str = "<config>"
    metrics: MetricsConfig | None = None  # [metrics]: the daemon's Prometheus port


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: serve ``Daemon.metrics()`` for Prometheus on ``address:port``."""

    port: int  # 0: any free port (Daemon.metrics_address says which)
    address: str = "0.0.0.0"  # every interface, as prometheus_client's own default


# key -> (accepted types, required)
_Spec = dict[str, tuple[tuple[type, ...], bool]]
_STORE: _Spec = {"url": ((str,), True), "endpoint_url": ((str,), False),
                 "region": ((str,), False), "connect_timeout": ((int, float), False),
                 "read_timeout": ((int, float), False)}
_PRODUCER: _Spec = {"work_dir": ((str,), False), "compression_level": ((int,), False)}
_FEED: _Spec = {
    "name": ((str,), True),
    "table": ((str,), True),
    "primary_key": ((str, list), True),
    "columns": ((list,), False),
    "indexes": ((list,), False),
    "snapshot_every": ((int,), False),
    "max_change_ratio": ((int, float), False),
    "min_records": ((int,), False),
    "poll_interval": ((int, float), False),
    "validators": ((list,), False),
    "allow_unsigned": ((bool,), False),
    "format": ((int,), False),
}
_METRICS: _Spec = {"port": ((int,), True), "address": ((str,), False)}
_TOP = {"store", "catalog", "producer", "feed", "metrics"}


def load_config(path: str | os.PathLike[str]) -> DaemonConfig:
    """Read and check the TOML file at ``path``.

    Raises:
        ConfigurationError: unreadable or invalid TOML, an unknown or missing key, a value
            of the wrong type (the message names the file and the key).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read the config: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(doc, source=str(path), base_dir=path.parent)


def _check(table: Any, spec: _Spec, where: str,
           source: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigurationError(f"{source}: [{where}] must be a table")
    for key in table:
        if key not in spec:
            raise ConfigurationError(f"{source}: unknown key {where}.{key} "
                                     f"(known keys: {', '.join(sorted(spec))})")
    for key, (types, required) in spec.items():
        if key not in table:
            if required:
                raise ConfigurationError(f"{source}: missing key {where}.{key}")
            continue
        value = table[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            wanted = " or ".join("array" if t is list else t.__name__ for t in types)
            raise ConfigurationError(f"{source}: {where}.{key} must be {wanted}, "
                                     f"not {type(value).__name__} {value!r}")
    return table


def _strings(value: Any, where: str, source: str, *, unique: bool = False) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not items or not all(isinstance(v, str) and v for v in items):
        raise ConfigurationError(f"{source}: {where} must be a non-empty string or an array "
                                 "of non-empty strings")
    if unique:
        twice = sorted({v for v in items if items.count(v) > 1})
        if twice:
            raise ConfigurationError(f"{source}: {where} names column "
                                     f"{', '.join(map(repr, twice))} more than once")
    return tuple(items)


def _resolve(value: str, base_dir: Path | None) -> str:
    """A relative folder path is taken relative to the config file."""
    if base_dir is None or "://" in value or os.path.isabs(value):
        return value
    return str((base_dir / value).resolve())


def parse_config(doc: dict[str, Any], *, source: str = "<config>",
                 base_dir: Path | None = None) -> DaemonConfig:
    """Check an already parsed config document (see :func:`load_config`)."""
    for key in doc:
        if key not in _TOP:
            raise ConfigurationError(f"{source}: unknown key {key} "
                                     f"(known: {', '.join(sorted(_TOP))})")
    for key in ("store", "catalog", "feed"):
        if key not in doc:
            raise ConfigurationError(f"{source}: missing [{'[feed]' if key == 'feed' else key}]")
    store = _check(doc["store"], _STORE, "store", source)
    catalog = doc["catalog"]
    if not isinstance(catalog, dict) or not isinstance(catalog.get("name"), str):
        raise ConfigurationError(f"{source}: [catalog] must be a table with a string name")
    producer = _check(doc.get("producer", {}), _PRODUCER, "producer", source)

    level = producer.get("compression_level", 3)
    entries = doc["feed"]
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError(f"{source}: [[feed]] must list at least one feed")
    feeds: list[FeedConfig] = []
    for i, entry in enumerate(entries):
        where = f"feed[{i}]"
        f = _check(entry, _FEED, where, source)
        try:
            names.validate_feed(f["name"])
        except ConfigurationError as exc:
            raise ConfigurationError(f"{source}: {where}.name: {exc}") from None
        where = f"feed[{i}] ({f['name']})"
        if any(f["name"] == g.name for g in feeds):
            raise ConfigurationError(f"{source}: {where}: feed name {f['name']!r} appears twice")
        ratio = f.get("max_change_ratio")
        validators = _strings(f["validators"], f"{where}.validators", source) \
            if f.get("validators") else ()
        columns = _strings(f["columns"], f"{where}.columns", source, unique=True) \
            if "columns" in f else None
        try:  # every rule is the settings' own (ProducerSettings, FeedConfig)
            feeds.append(FeedConfig(
                feed=f["name"], table=f["table"],
                primary_key=_strings(f["primary_key"], f"{where}.primary_key", source,
                                     unique=True),
                columns=columns,
                indexes=_strings(f["indexes"], f"{where}.indexes", source, unique=True)
                if f.get("indexes") else (),
                snapshot_every=f.get("snapshot_every", 10),
                max_change_ratio=float(ratio) if ratio is not None else None,
                min_records=f.get("min_records", 0),
                poll_interval=float(f.get("poll_interval", 5.0)), validators=validators,
                allow_unsigned=f.get("allow_unsigned", False), format=f.get("format", 2),
                compression_level=level,
            ))
        except SettingsError as exc:
            key = ("producer.compression_level" if exc.setting == "compression_level"
                   else f"{where}.{exc.setting}")
            raise ConfigurationError(f"{source}: {key} {exc.problem}") from None
    work_dir = producer.get("work_dir")
    metrics = None
    if "metrics" in doc:
        m = _check(doc["metrics"], _METRICS, "metrics", source)
        if not 0 <= m["port"] <= 65535:
            raise ConfigurationError(f"{source}: metrics.port must be 0..65535, not {m['port']}")
        metrics = MetricsConfig(m["port"], m.get("address", "0.0.0.0"))
    return DaemonConfig(
        metrics=metrics,
        store=StoreConfig(_resolve(store["url"], base_dir),
                          {k: v for k, v in store.items() if k != "url"}),
        catalog=CatalogConfig(catalog["name"],
                              {k: v for k, v in catalog.items() if k != "name"}),
        feeds=tuple(feeds),
        work_dir=Path(_resolve(work_dir, base_dir)) if work_dir else None,
        compression_level=level,
        source=source,
    )
