"""Helpers shared by the draft and commit unit tests."""

from __future__ import annotations

import os

from artifactfs.drafts.draft import Draft


def write(d: Draft, path: str, data: bytes, offset: int = 0, truncate: bool = False,
          create: bool = False) -> None:
    local = d.create(path) if create else d.open_for_write(path, truncate)
    try:
        fd = os.open(local, os.O_WRONLY)
        os.pwrite(fd, data, offset)
        os.close(fd)
    finally:
        d.release(local)
