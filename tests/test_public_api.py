"""The public surface: __all__, the error tree, and a consumer that never imports pyarrow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import feedkit
from tests.conftest import titles_table


def test_all_matches_the_exports() -> None:
    for name in feedkit.__all__:
        assert getattr(feedkit, name) is not None
    public = {n for n in vars(feedkit) if not n.startswith("_")}
    modules = {"errors", "store", "names", "codec", "keys", "format", "blobs", "manifest",
               "merge", "metrics", "consumer", "producer", "admin", "cli", "signing", "forks",
               "cache", "loader", "planner", "state",
               "annotations",
               "TYPE_CHECKING", "Any"}
    assert public - modules <= set(feedkit.__all__), public - modules - set(feedkit.__all__)


def test_every_error_is_a_feedkit_error() -> None:
    errors = [getattr(feedkit, n) for n in feedkit.__all__ if n.endswith("Error")]
    assert len(errors) >= 10
    assert all(issubclass(e, feedkit.FeedkitError) for e in errors)
    assert issubclass(feedkit.ProducerFencedError, feedkit.StoreError)
    assert issubclass(feedkit.KeyTypeError, TypeError)


LEAN = r"""
import sys
sys.modules["pyarrow"] = None      # importing these now raises ImportError
sys.modules["pyiceberg"] = None
import feedkit
store = feedkit.open_store(sys.argv[1])
with feedkit.Consumer(store, feed="titles", cache_dir=sys.argv[2], watch=True) as feed:
    assert feed.get(5).title == "title 5", feed.get(5)
    assert len(feed.get_many(range(10))) == 10
try:
    feedkit.Producer
except feedkit.NotInstalledError as exc:
    assert "pip install 'feedkit[producer]'" in str(exc), exc
else:
    raise AssertionError("Producer imported without pyarrow")
loaded = [m for m in sys.modules if m.startswith(("pyarrow", "pyiceberg")) and sys.modules[m]]
assert not loaded, loaded
print("lean ok")
"""


def test_consumer_runs_without_pyarrow_or_pyiceberg(store, cache_dir) -> None:
    feedkit.Producer(store, feed="titles", primary_key="movie_id").publish(titles_table(100))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", LEAN, store.url, str(cache_dir)],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "lean ok" in out.stdout


def _imports(path: Path) -> set[str]:
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_layers_import_downwards_only() -> None:
    """The core imports neither side; a side never imports the other; admin reaches state
    files through the core (DESIGN.md's layers)."""
    root = Path(__file__).resolve().parents[1]
    tools = {"__init__.py", "metrics.py", "cli.py"}  # the public API and the tools
    rules = [(p, ("feedkit.consumer", "feedkit.producer"))
             for p in (root / "feedkit").rglob("*.py")
             if p.name not in tools and "admin" not in p.parts]
    rules += [(p, ("feedkit.consumer",)) for p in (root / "feedkit" / "admin").glob("*.py")]
    rules += [(p, ("feedkit.consumer",)) for p in (root / "producer").glob("*.py")]
    rules += [(p, ("feedkit.producer",)) for p in (root / "consumer").glob("*.py")]
    wrong = [f"{p.relative_to(root)} imports {m}" for p, banned in rules
             for m in sorted(_imports(p)) if m.startswith(banned)]
    assert not wrong, wrong
