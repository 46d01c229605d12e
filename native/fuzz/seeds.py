"""Seeds for the cargo fuzz targets: real state files (tests/fuzz's seeds) with the numbers
their headers give, in the `verify` target's input layout (25 little-endian u64, then the
file), and their records for the `msgpack` target; format-2 files (the compact fuzz test's
fixed tables) for the `compact` target, as they are.

Run from the repository root: ``.venv/bin/python native/fuzz/seeds.py``.
"""

from __future__ import annotations

import struct
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from feedkit.format import StateFile  # noqa: E402
from tests.fuzz.support import state_seeds  # noqa: E402
from tests.fuzz.test_compact_state_file import fixed_tables, make_case  # noqa: E402

HOMES = {"low": 0, "fib": 1, "xxh3": 2}


def main() -> None:
    verify_dir, msgpack_dir = HERE / "corpus" / "verify", HERE / "corpus" / "msgpack"
    verify_dir.mkdir(parents=True, exist_ok=True)
    msgpack_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for seed in state_seeds(Path(tmp)):
            path = Path(tmp) / "s"
            path.write_bytes(seed.data)
            sf = StateFile(path)
            words = [sf.body_offset, sf.slot_count, sf.bits, HOMES[sf.method],
                     sf.empty % 2**64, sf.heap_offset, sf.heap_end, int(sf.kind == "overlay"),
                     sf.count, sf.tombstones, len(sf.header["schema"]), 1,
                     len(sf.header["indexes"])]
            for meta in list(sf.header["indexes"].values())[:2]:
                words += [sf.body_offset + meta["table"], meta["slots"], meta["empty"],
                          meta["values"], sf.body_offset + meta["postings"], meta["count"]]
            words += [0] * (25 - len(words))
            (verify_dir / seed.name).write_bytes(struct.pack("<25Q", *words) + seed.data)
            starts, lengths = sf.record_ranges(sf.occupied())
            for i, (a, n) in enumerate(zip(starts.tolist(), lengths.tolist(), strict=True)):
                (msgpack_dir / f"{seed.name}-{i}").write_bytes(seed.data[a:a + n])
            del sf
        compact_dir = HERE / "corpus" / "compact"
        compact_dir.mkdir(parents=True, exist_ok=True)
        for i, table in enumerate(fixed_tables()):
            case = make_case(Path(tmp) / f"compact{i}", table)
            (compact_dir / table.name.replace(" ", "-")).write_bytes(case.data)
    print(f"wrote {len(list(verify_dir.iterdir()))} verify seeds, "
          f"{len(list(msgpack_dir.iterdir()))} msgpack seeds, "
          f"{len(list(compact_dir.iterdir()))} compact seeds under {HERE / 'corpus'}")


if __name__ == "__main__":
    main()
