"""Removing a directory tree thousands of levels deep (tests that download one must clean it
up themselves: pytest's removal of old temp directories, and Python 3.11's shutil.rmtree and
os.walk, recurse once per level)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def rm_deep(root: Path) -> None:
    """Remove ``root`` by moving each grandchild directory up, one level at a time: paths stay
    short and nothing recurses deeper than two levels."""
    if not root.exists():
        return
    n = 0
    while True:
        subdirs = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]
        if not subdirs:
            break
        for x in subdirs:
            for q in [q for q in x.iterdir() if q.is_dir() and not q.is_symlink()]:
                n += 1
                os.rename(q, root / f".up{n}")
            shutil.rmtree(x)
    shutil.rmtree(root)
