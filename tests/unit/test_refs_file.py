"""file:// references: expansion, naming, limits, verified reads and downloads."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from artifactfs import refs
from artifactfs.errors import InvalidName, NotFound, ReferenceChanged, UsageError
from artifactfs.model import Entry
from artifactfs.refs import file as file_refs


@pytest.fixture(autouse=True)
def _fresh_memo() -> None:
    file_refs.clear_memo()


def uri(p: Path) -> str:
    return p.absolute().as_uri()


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "a.txt": b"alpha\n",
        "sub/b.bin": bytes(range(256)) * 40,
        "sub/deeper/c.csv": b"x,y\n1,2\n",
        "with space %41.txt": b"odd name",
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


def one(uri_: str, **kw: object) -> tuple[str, Entry]:
    out = refs.expand(uri_, **kw)  # type: ignore[arg-type]
    assert len(out) == 1
    return out[0]


def test_single_file_named_by_basename_or_name(tmp_path: Path) -> None:
    p = tmp_path / "model.h5"
    p.write_bytes(b"weights")
    path, e = one(uri(p))
    assert path == "model.h5"
    assert e.kind == "ref" and e.size == 7 and e.ref is not None
    assert e.ref.sha256 is not None and e.ref.mtime_ns == os.stat(p).st_mtime_ns
    assert e.mtime_ns == os.stat(p).st_mtime_ns
    assert one(uri(p), name="models/best.h5")[0] == "models/best.h5"
    assert refs.read_range(e, 0, 100) == b"weights"


def test_directory_expansion_and_names(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "ds")
    got = refs.expand(uri(tmp_path / "ds") + "/")
    assert [p for p, _ in got] == sorted(files)
    for path, e in got:
        assert refs.read_range(e, 0, e.size) == files[path]
    named = refs.expand(uri(tmp_path / "ds"), name="raw")
    assert [p for p, _ in named] == sorted(f"raw/{p}" for p in files)
    # the same content gives the same entries (digest of the recorded identity)
    assert [e for _, e in named] == [e for _, e in got]


def test_directory_skips_special_files_and_dir_symlinks(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "f").write_bytes(b"f")
    os.mkfifo(d / "fifo")
    os.symlink(d, d / "loop")
    os.symlink(d / "f", d / "link-to-f")
    assert [p for p, _ in refs.expand(uri(d))] == ["f", "link-to-f"]


def test_max_objects_is_an_error_not_a_truncation(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"f{i}").write_bytes(b"x")
    assert len(refs.expand(uri(tmp_path), max_objects=5)) == 5
    with pytest.raises(UsageError, match=r"more than 4 objects \(max_objects=4\); raise max_objects"):
        refs.expand(uri(tmp_path), max_objects=4)


def test_missing_bad_uri_and_bad_names(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="nope"):
        refs.expand(uri(tmp_path / "nope"))
    with pytest.raises(UsageError, match="unsupported reference URI"):
        refs.expand("ftp://host/x")
    with pytest.raises(UsageError, match="unsupported reference URI"):
        refs.expand(str(tmp_path))
    with pytest.raises(UsageError, match="file:///absolute/path"):
        refs.expand("file://otherhost/x")
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(InvalidName):
        refs.expand(uri(tmp_path / "f"), name="../escape")


def test_read_range_parts(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    (tmp_path / "big").write_bytes(data)
    _, e = one(uri(tmp_path / "big"))
    assert refs.read_range(e, 0, 10) == data[:10]
    assert refs.read_range(e, 4096, 5000) == data[4096:9096]
    assert refs.read_range(e, 99_990, 100) == data[99_990:]
    assert refs.read_range(e, 100_000, 10) == b""


def test_same_size_rewrite_is_detected(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"original")
    _, e = one(uri(p))
    assert refs.read_range(e, 0, 3) == b"ori"  # verified and memoized
    st = os.stat(p)
    p.write_bytes(b"tampered")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: only ctime moves
    with pytest.raises(ReferenceChanged, match="reference changed since it was logged: file://"):
        refs.read_range(e, 0, 3)
    with pytest.raises(ReferenceChanged):
        refs.verify_whole(e)
    dest = tmp_path / "out"
    with pytest.raises(ReferenceChanged):
        refs.download_to(e, str(dest))
    assert not dest.exists() and sorted(os.listdir(tmp_path)) == ["f"]


def test_mtime_change_is_detected(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"content")
    _, e = one(uri(p))
    os.utime(p, ns=(0, 1_000_000_000))
    with pytest.raises(ReferenceChanged, match="modification time"):
        refs.read_range(e, 0, 3)


def test_size_change_and_removal_are_detected(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"content")
    _, e = one(uri(p))
    p.write_bytes(b"content and more")
    with pytest.raises(ReferenceChanged, match="size"):
        refs.read_range(e, 0, 3)
    p.unlink()
    with pytest.raises(ReferenceChanged, match="no longer exists"):
        refs.read_range(e, 0, 3)


def test_checksum_false_records_only_uri_and_still_reads(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"first")
    _, e = one(uri(p), checksum=False)
    assert e.ref is not None and e.ref.sha256 is None and e.ref.mtime_ns is None
    assert not e.ref.checksum and e.size == 5
    p.write_bytes(b"later")  # same size, new content: read as it is now
    assert refs.read_range(e, 0, 5) == b"later"
    dest = tmp_path / "copy"
    refs.download_to(e, str(dest))
    assert dest.read_bytes() == b"later"


def test_download_to_streams_and_verifies(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    _, e = one(uri(src))
    dest = tmp_path / "out" / "x.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"old")  # replaced atomically
    refs.download_to(e, str(dest))
    assert dest.read_bytes() == data
    assert os.listdir(dest.parent) == ["x.bin"]


def test_concurrent_first_reads_hash_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(1 << 20)
    (tmp_path / "f").write_bytes(data)
    _, e = one(uri(tmp_path / "f"))
    file_refs.clear_memo()  # logging memoized the hash it made: forget it
    calls = []
    real = file_refs._hash_fd

    def counting(fd: int) -> str:
        calls.append(fd)
        return real(fd)

    monkeypatch.setattr(file_refs, "_hash_fd", counting)
    results: list[bytes] = []

    def reader(i: int) -> None:
        results.append(refs.read_range(e, i * 4096, 4096))

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(results) == sorted(data[i * 4096:(i + 1) * 4096] for i in range(8))
    refs.read_range(e, 0, 1)
    assert len(calls) == 1


def test_logging_memoizes_its_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    _, e = one(uri(tmp_path / "f"))
    monkeypatch.setattr(file_refs, "_hash_fd", lambda fd: pytest.fail("hashed again"))
    assert refs.read_range(e, 1, 2) == b"bc"


def test_uri_round_trip_of_odd_names(tmp_path: Path) -> None:
    name = "a?b#c %25 d"
    (tmp_path / name).write_bytes(b"odd")
    got = refs.expand(uri(tmp_path))
    assert [p for p, _ in got] == [name]
    e = got[0][1]
    assert e.ref is not None and file_refs.path_of(e.ref.uri) == str(tmp_path / name)
    assert refs.read_range(e, 0, 3) == b"odd"


def test_unreadable_directory_is_a_clear_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads everything")
    d = tmp_path / "d" / "locked"
    d.mkdir(parents=True)
    (d / "f").write_bytes(b"x")
    d.chmod(0)
    try:
        with pytest.raises(UsageError, match="cannot read reference"):
            refs.expand(uri(tmp_path / "d"))
    finally:
        d.chmod(0o755)
