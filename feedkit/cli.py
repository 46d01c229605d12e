"""``feedkit``: look at and operate the feeds of any store. A thin click layer that prints
what :mod:`feedkit.admin` returns::

    feedkit versions STORE FEED [--limit N] [--json]
    feedkit inspect  STORE FEED [--version V] [--json]
    feedkit get      STORE FEED KEY [--version V] [--cache-dir DIR] [--compact]
    feedkit diff     STORE FEED OLD NEW [--show N] [--cache-dir DIR] [--json]
    feedkit pin      STORE FEED VERSION [--reason TEXT] [--json]
    feedkit unpin    STORE FEED [--json]
    feedkit gc       STORE FEED --keep N [--temp-age MINUTES] [--dry-run] [--json]

``STORE`` is a folder, ``file:///path`` or ``s3://bucket/prefix``; every command takes
``--endpoint-url`` for an S3-compatible server. A local folder that does not exist is an
error (no command creates it: only producers write a store). Exit codes: 0 done; 1 a
feedkit error (one line on stderr) or, for ``get``, no such key; 2 a bad command line.

Never imports pyarrow or pyiceberg: it runs on a consumer-only install.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

import click

from feedkit import admin
from feedkit.admin.gc import TEMP_AGE
from feedkit.errors import FeedkitError, KeyTypeError, VersionNotFoundError
from feedkit.store import BlobStore, open_store
from feedkit.store.local import LocalStore

__all__ = ["main"]


class _Group(click.Group):
    """Every expected failure (a FeedkitError) is one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FeedkitError as exc:
            raise click.ClickException(str(exc)) from None


def _feed_command(f: Callable[..., Any]) -> Callable[..., Any]:
    """STORE and FEED arguments and ``--endpoint-url``; the command gets ``store`` opened.

    A local store whose folder does not exist is refused before the command runs (a
    mistyped path says so, instead of "no versions"); no command ever creates it.
    """

    @functools.wraps(f)
    def wrapper(store: str, endpoint_url: str | None, feed: str, **kwargs: Any) -> Any:
        options = {"endpoint_url": endpoint_url} if endpoint_url else {}
        opened = open_store(store, **options)
        try:
            if isinstance(opened, LocalStore) and not opened.root.is_dir():
                what = "not a folder" if opened.root.exists() else "no such folder"
                raise VersionNotFoundError(
                    f"feed {feed!r}: no store at {opened.url} ({what}; check the path: "
                    "feedkit commands never create one)")
            return f(store=opened, feed=feed, **kwargs)
        finally:
            opened.close()

    wrapper = click.option("--endpoint-url", metavar="URL",
                           help="S3-compatible endpoint (s3:// stores only; else "
                                "AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL).")(wrapper)
    wrapper = click.argument("feed")(wrapper)
    return click.argument("store")(wrapper)


_json = click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
_cache_dir = click.option(
    "--cache-dir", type=click.Path(file_okay=False), metavar="DIR",
    help="A consumer cache folder to load versions into (kept and reused); default: a "
         "temporary folder, removed afterwards.")


def _echo_json(doc: Any, *, indent: int | None = 2) -> None:
    click.echo(json.dumps(doc, indent=indent, ensure_ascii=False))


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def _pin_line(pin: Any) -> str:
    reason = f": {pin.reason}" if pin.reason else ""
    return f"pinned by {pin.by or 'unknown'} at {pin.at}{reason} (latest {pin.latest})"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="feedkit")
def main() -> None:
    """Look at and operate feedkit feeds in a store (a folder, file:///path or
    s3://bucket/prefix)."""
    logging.basicConfig(level=logging.WARNING, format="feedkit: %(levelname)s %(message)s")


@main.command()
@_feed_command
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Only the newest N.")
@_json
def versions(store: BlobStore, feed: str, limit: int | None, as_json: bool) -> None:
    """Every version of FEED, newest first: time, Iceberg snapshot, records, blob sizes,
    and which one is announced (and pinned)."""
    result = admin.list_versions(store, feed, limit=limit)
    if as_json:
        _echo_json(result.to_json())
        return
    a = result.announcement
    head = f"feed {feed}: announced {a.version if a else 'nothing'}"
    click.echo(head + (f", {_pin_line(a.pinned)}" if a and a.pinned else ""))
    if not result.versions:
        click.echo("no versions")
        return
    rows = [("VERSION", "CREATED", "RECORDS", "SNAPSHOT", "DELTA", "ICEBERG SNAPSHOT", "")]
    for v in result.versions:
        status = ("announced, pinned" if v.pinned else "announced" if v.announced
                  else "latest (before the pin)" if v.latest else "")
        rows.append((str(v.version), v.created_at, str(v.record_count), _size(v.snapshot_size),
                     _size(v.delta_size), "-" if v.iceberg_snapshot is None
                     else str(v.iceberg_snapshot), status))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


@main.command()
@_feed_command
@click.option("--version", "version", type=int, metavar="V",
              help="The version to inspect (default: the announced one).")
@_json
def inspect(store: BlobStore, feed: str, version: int | None, as_json: bool) -> None:
    """One version's schema, key, indexes, record count, blobs, nearest snapshot, parent,
    source, and what a fresh consumer downloads for it."""
    result = admin.inspect_version(store, feed, version)
    if as_json:
        _echo_json(result.to_json())
        return
    m = result.manifest
    status = ", ".join(s for s, on in (("announced", result.announced),
                                       ("pinned", result.pin is not None)) if on)
    key = ", ".join(f"{c} ({k})" for c, k in zip(m.key["columns"], m.key["parts"], strict=True))
    lines = [("feed", m.feed), ("version", f"{m.version}" + (f" ({status})" if status else "")),
             ("created", m.created_at), ("parent", str(m.parent or "-")),
             ("nearest snapshot", str(m.nearest_snapshot)), ("records", str(m.record_count)),
             ("state digest", f"{m.state_digest:016x}"), ("key", key),
             ("indexes", ", ".join(m.index_fields) or "-")]
    for name, blob in (("snapshot", m.snapshot), ("delta", m.delta)):
        lines.append((name, f"{blob.key}  {_size(blob.size)} (state file {_size(blob.raw_size)})"
                      if blob else "-"))
    lines.append(("source", json.dumps(m.source) if m.source is not None else "-"))
    if result.fetch_error:
        lines.append(("fresh load", f"impossible: {result.fetch_error}"))
    else:
        lines.append(("fresh load", f"snapshot {result.fetch_snapshot} + "
                                    f"{len(result.fetch_deltas)} delta(s), "
                                    f"{_size(result.fetch_bytes)}"))
    if result.pin is not None:
        lines.append(("pin", _pin_line(result.pin)))
    for name, value in lines:
        click.echo(f"{name:<17} {value}")
    click.echo("schema")
    cols = [(c["name"], c["type"], c["kind"], "nullable" if c["nullable"] else "not null")
            for c in m.schema]
    widths = [max(len(r[i]) for r in cols) for i in range(4)] if cols else []
    for c in cols:
        click.echo("  " + "  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)).rstrip())


@main.command()
@_feed_command
@click.argument("key")
@click.option("--version", "version", type=int, metavar="V",
              help="The version to read (default: the announced one).")
@_cache_dir
@click.option("--compact", is_flag=True, help="One line of JSON.")
def get(store: BlobStore, feed: str, key: str, version: int | None, cache_dir: str | None,
        compact: bool) -> None:
    """Print the record of KEY as a JSON object (exit code 1 when there is none).

    \b
    KEY is parsed by the feed's key columns:
      int     decimal digits: 42 (a negative key after --: feedkit get S F -- -42)
      str     the text as is
      bytes   hex digits, optionally after 0x: 0a1b
      several a JSON array, one element per column: '[42, "DE"]' (bytes as hex
              strings), or the parts separated by commas: 42,DE (the last part keeps
              any further commas; use the JSON form when an earlier part has one)

    \b
    Values JSON has no type for are printed as:
      timestamp, date, time   ISO 8601 strings (an aware timestamp with its UTC offset)
      decimal, uuid           strings ("1.50", "12345678-...")
      bytes                   lower-case hex strings
      NaN, +-inf floats       "NaN", "Infinity", "-Infinity"
      map keys                strings (a non-string key as its JSON text: 1 -> "1")
    """
    try:
        result = admin.get_record(store, feed, key, version=version, cache_dir=cache_dir)
    except KeyTypeError as exc:
        raise click.BadParameter(str(exc), param_hint="KEY") from None
    if result.record is None:
        raise click.ClickException(f"feed {feed!r} version {result.version}: no record with "
                                   f"key {json.dumps(admin.jsonable(result.key))}")
    _echo_json(result.record, indent=None if compact else 2)


@main.command()
@_feed_command
@click.argument("old", type=int)
@click.argument("new", type=int)
@click.option("--show", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Show N examples of each: added and removed keys, changed records.")
@_cache_dir
@_json
def diff(store: BlobStore, feed: str, old: int, new: int, show: int, cache_dir: str | None,
         as_json: bool) -> None:
    """Count the records added, removed and changed from version OLD to version NEW
    (compared as bytes, by key)."""
    result = admin.diff_versions(store, feed, old, new, show=show, cache_dir=cache_dir)
    if as_json:
        _echo_json(result.to_json())
        return
    click.echo(f"feed {feed}: version {old} -> {new}")
    for name in ("added", "removed", "changed", "unchanged"):
        click.echo(f"{name:<10} {getattr(result, name)}")
    if result.schema_changed:
        click.echo("(the schema changed: records are compared as bytes, so a new or removed "
                   "column counts every record as changed)")
    doc = result.to_json()["examples"]
    for name in ("added", "removed"):
        if doc[name]:
            click.echo(f"{name} keys: " + ", ".join(json.dumps(k) for k in doc[name]))
    for change in doc["changed"]:
        click.echo(f"changed key {json.dumps(change['key'])}")
        click.echo(f"  - {json.dumps(change['old'], ensure_ascii=False)}")
        click.echo(f"  + {json.dumps(change['new'], ensure_ascii=False)}")


@main.command()
@_feed_command
@click.argument("version", type=int)
@click.option("--reason", metavar="TEXT", help="Why (recorded in the announcement).")
@_json
def pin(store: BlobStore, feed: str, version: int, reason: str | None, as_json: bool) -> None:
    """Roll back: announce VERSION and hold the feed there.

    Consumers move to VERSION at their next poll; producers publish nothing until
    `feedkit unpin`. The version's manifest and blobs must be in the store. Fails, changing
    nothing, when the announcement moves meanwhile.
    """
    result = admin.pin(store, feed, version, reason=reason)
    if as_json:
        _echo_json(result.to_json())
        return
    pinned = result.announcement.pinned
    assert pinned is not None
    click.echo(f"feed {feed}: announced version {version} (was {result.previous.version}), "
               f"{_pin_line(pinned)}")


@main.command()
@_feed_command
@_json
def unpin(store: BlobStore, feed: str, as_json: bool) -> None:
    """Clear the pin: announce again the version announced before the pin (the pin's
    latest), so producers publish again, on top of it.

    Never a newer version found in the store: one nobody announced (its producer was
    killed, or fenced by the pin, after writing it) is not announced by unpin either.
    """
    result = admin.unpin(store, feed)
    if as_json:
        _echo_json(result.to_json())
        return
    if not result.changed:
        click.echo(f"feed {feed} is not pinned (announced version {result.previous.version}); "
                   "nothing changed")
        return
    click.echo(f"feed {feed}: unpinned, announced version {result.announcement.version} "
               f"(was pinned to {result.previous.version})")


@main.command()
@_feed_command
@click.option("--keep", type=click.IntRange(min=1), required=True, metavar="N",
              help="Keep the N newest versions (with the announced, the pinned and the "
                   "pin's latest).")
@click.option("--temp-age", type=click.FloatRange(min=0), default=TEMP_AGE / 60,
              show_default=True, metavar="MINUTES",
              help="In a local store, also delete the feed's temporary files (.NAME.HEX.tmp, "
                   "left by writes that failed or were killed) not written for MINUTES.")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@_json
def gc(store: BlobStore, feed: str, keep: int, temp_age: float, dry_run: bool,
       as_json: bool) -> None:
    """Delete the manifests and blobs no retained version needs.

    Retained: the N newest versions, the announced one and the pin's latest, each with
    every version back to its nearest snapshot (what a consumer loads it from). Manifests
    are deleted before their blobs.

    In a local store, the feed's temporary files that failed writes left (a full disk, a
    killed producer) go too, once not written for --temp-age minutes: a write in progress
    writes its file all along, so an old one is a leftover.
    """
    result = admin.collect_garbage(store, feed, keep=keep, dry_run=dry_run,
                                   temp_age=temp_age * 60)
    if as_json:
        _echo_json(result.to_json())
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"feed {feed}: retained {len(result.retained)} version(s) "
               f"({result.retained[0] if result.retained else '-'} .. "
               f"{result.retained[-1] if result.retained else '-'}); {verb} "
               f"{len(result.deleted_versions)} manifest(s) and {len(result.deleted_blobs)} "
               f"blob(s)" + (f" and {len(result.deleted_temporaries)} temporary file(s)"
                             if result.deleted_temporaries else "")
               + f", {_size(result.deleted_bytes)}")
    for version in result.deleted_versions:
        click.echo(f"  version {version}")
    for blob in result.deleted_blobs:
        click.echo(f"  {blob.key}  {_size(blob.size) if blob.size is not None else '(no manifest)'}")
    for temp in result.deleted_temporaries:
        click.echo(f"  {temp.key}  {_size(temp.size)} (temporary file of a failed write)")


if __name__ == "__main__":  # pragma: no cover
    main()
