"""cachedio: opens and reads that only the kernel's caches answer."""

from __future__ import annotations

import os

from artifactfs.mount.cachedio import open_cached, read_cached


def test_a_cached_file_opens_and_reads_whole(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"x" * 5000)  # just written: in the page cache, its path in the dcache
    fd = open_cached(str(p))
    assert fd is not None
    try:
        assert read_cached(fd, 5000) == b"x" * 5000
        assert read_cached(fd, 5001) is None  # short: never taken for the whole
    finally:
        os.close(fd)


def test_a_missing_path_is_none(tmp_path):
    assert open_cached(str(tmp_path / "nope")) is None
