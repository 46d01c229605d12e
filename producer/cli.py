"""``feedkit-producer``: the daemon's command line (click, which pyiceberg already brings).

    feedkit-producer run  --config producer.toml          watch and publish until SIGTERM
    feedkit-producer once --config producer.toml [--force] [--feed NAME]

Exit codes: 0 done (``once``: every feed published or had nothing to publish), 1 a feed
failed or was refused (``once``), 2 a bad command line or configuration.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from typing import Any

import click

from feedkit.errors import FeedkitError

__all__ = ["main"]


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter("%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s %(message)s",
                                  datefmt="%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("pyiceberg", "watchdog", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def _daemon(config_path: str, feeds: tuple[str, ...], force: bool) -> Any:
    from .config import load_config
    from .daemon import Daemon

    config = load_config(config_path)
    if feeds:
        known = {f.name for f in config.feeds}
        unknown = [f for f in feeds if f not in known]
        if unknown:
            raise click.UsageError(f"no feed {', '.join(map(repr, unknown))} in {config_path} "
                                   f"(feeds: {', '.join(sorted(known))})")
        config = dataclasses.replace(config, feeds=tuple(f for f in config.feeds
                                                          if f.name in feeds))
    return Daemon(config, force=force)


_config = click.option("--config", "-c", "config_path", required=True,
                       type=click.Path(dir_okay=False), help="The producer's TOML config.")
_feed = click.option("--feed", "feeds", multiple=True, metavar="NAME",
                     help="Only this feed (repeatable).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.version_option(package_name="feedkit")
def main(log_level: str) -> None:
    """Publish feedkit feeds from Iceberg tables."""
    _setup_logging(log_level)


@main.command()
@_config
@_feed
def run(config_path: str, feeds: tuple[str, ...]) -> None:
    """Watch the tables and publish a version per change until SIGTERM/SIGINT."""
    try:
        daemon = _daemon(config_path, feeds, force=False)
    except FeedkitError as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(daemon.run())


@main.command()
@_config
@_feed
@click.option("--force", is_flag=True,
              help="Publish past max_change_ratio and min_records (never past key rules).")
def once(config_path: str, feeds: tuple[str, ...], force: bool) -> None:
    """Run one cycle for every feed and exit (non-zero if a feed failed or was refused)."""
    try:
        daemon = _daemon(config_path, feeds, force=force)
    except FeedkitError as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(daemon.once())


if __name__ == "__main__":  # pragma: no cover
    main()
