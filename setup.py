"""Build glue: maturin compiles the Rust crate in native/ into ``feedkit._native``.

The package itself is plain setuptools (pyproject.toml), because the card's layout maps
the top-level ``producer/`` and ``consumer/`` folders onto ``feedkit.producer`` and
``feedkit.consumer``, which maturin's own backend cannot express. So setuptools places
the extension (``build_ext``: in place for ``pip install -e .``, in the wheel otherwise)
and maturin builds it: ``maturin build`` makes a wheel of the crate alone, and the
compiled module is taken out of it.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def _maturin() -> list[str]:
    """The maturin command: pip's build environment puts its script on PATH."""
    found = shutil.which("maturin")
    return [found] if found else [sys.executable, "-m", "maturin"]


class build_native(build_ext):
    """Builds ``feedkit._native`` with maturin (release profile)."""

    def build_extension(self, ext: Extension) -> None:
        target = self.get_ext_fullpath(ext.name)
        with tempfile.TemporaryDirectory() as out:
            subprocess.run(
                [*_maturin(), "build", "--release", "--quiet",
                 "--manifest-path", os.path.join(HERE, "native", "Cargo.toml"),
                 "--interpreter", sys.executable, "--compatibility", "linux",
                 "--out", out],
                check=True)
            (wheel,) = glob.glob(os.path.join(out, "*.whl"))
            with zipfile.ZipFile(wheel) as zf:
                suffix = os.path.basename(target)
                # the crate's lib is `_native`: its module init is PyInit__native, which
                # is what importing it as feedkit._native looks for
                (member,) = [n for n in zf.namelist() if n.endswith(f"/{suffix}")]
                os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
                with zf.open(member) as src, open(target + ".tmp", "wb") as dst:
                    dst.write(src.read())
        os.chmod(target + ".tmp", 0o755)
        os.replace(target + ".tmp", target)  # a running process keeps the old inode


setup(ext_modules=[Extension("feedkit._native", sources=[])],
      cmdclass={"build_ext": build_native})
