"""Operating a feed in a store: the logic behind the ``feedkit`` command line
(:mod:`feedkit.cli`), as functions returning data classes that also render as JSON
(``to_json``).

- :mod:`.versions`  the announcement and manifests: ``list_versions``, ``inspect_version``
- :mod:`.records`   one record: ``parse_key``, ``get_record``, ``jsonable``
- :mod:`.diff`      ``diff_versions``: records added, removed and changed between two versions
- :mod:`.rollback`  ``pin`` and ``unpin``: a rollback recorded in the announcement
- :mod:`.gc`        ``collect_garbage``: delete what no retained version needs, and the
                    temporary files failed writes left in a local store

Nothing here imports pyarrow or pyiceberg: it works with a consumer-only install. It sits
above both sides of feedkit and borrows the consumer's loader and planner, so that it loads
and plans versions exactly as consumers do.
"""

from __future__ import annotations

from .diff import ChangedRecord, VersionDiff, diff_versions
from .gc import TEMP_AGE, DeletedBlob, GcReport, collect_garbage
from .records import Lookup, get_record, jsonable, parse_key
from .rollback import AnnouncementChange, current_user, pin, unpin
from .versions import (
    FeedVersions,
    Inspection,
    VersionInfo,
    inspect_version,
    list_versions,
    read_announcement,
    read_manifest,
)

__all__ = [
    "TEMP_AGE",
    "AnnouncementChange",
    "ChangedRecord",
    "DeletedBlob",
    "FeedVersions",
    "GcReport",
    "Inspection",
    "Lookup",
    "VersionDiff",
    "VersionInfo",
    "collect_garbage",
    "current_user",
    "diff_versions",
    "get_record",
    "inspect_version",
    "jsonable",
    "list_versions",
    "parse_key",
    "pin",
    "read_announcement",
    "read_manifest",
    "unpin",
]
