"""Pure model: canonical encoding, digests, chunk lists, diff and path-copying updates."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifactfs import model, pathcopy, tree
from artifactfs.errors import IntegrityError, InvalidName


class MemStore:
    def __init__(self) -> None:
        self.nodes: dict[str, bytes] = {}

    def save(self, node: model.Node) -> None:
        self.nodes[node.oid] = node.data

    def load(self, oid: str) -> dict[str, model.Entry]:
        return model.decode_node(self.nodes[oid], oid)


def f(data: bytes, mtime: int = 0, x: bool = False) -> model.Entry:
    return model.file_entry(len(data), model.sha256_hex(data), executable=x, mtime_ns=mtime)


def test_encoding_is_canonical_and_round_trips() -> None:
    a = model.encode_node({"b": f(b"1"), "a": f(b"22", x=True), "l": model.symlink_entry("b")})
    b = model.encode_node({"l": model.symlink_entry("b"), "a": f(b"22", x=True), "b": f(b"1")})
    assert a.data == b.data and a.oid == b.oid
    assert model.decode_node(a.data, a.oid)["a"].executable
    assert a.size == 3 and a.count == 3


def test_content_digest_ignores_mtime_but_object_id_does_not() -> None:
    a = model.encode_node({"x": f(b"data", mtime=1)})
    b = model.encode_node({"x": f(b"data", mtime=2)})
    assert a.digest == b.digest
    assert a.oid != b.oid
    c = model.encode_node({"x": f(b"data", x=True)})
    assert c.digest != a.digest  # the executable bit is content


def test_decode_rejects_tampering_and_bad_names() -> None:
    n = model.encode_node({"x": f(b"data")})
    with pytest.raises(IntegrityError):
        model.decode_node(n.data.replace(b'"x"', b'"y"'), n.oid)
    for bad in (b'{"v":1,"e":[["..",{"k":"l","t":"a"}]]}', b'{"v":1,"e":[["a/b",{"k":"l","t":"a"}]]}',
                b'{"v":1,"e":[["a\\u0000",{"k":"l","t":"a"}]]}', b"not json",
                b'{"v":1,"e":[["a",{"k":"f","s":1,"d":"zz"}]]}'):
        with pytest.raises(IntegrityError):
            model.decode_node(bad)


def test_chunked_file_entries_validate_their_chunk_list() -> None:
    chunks = [model.sha256_hex(b"a"), model.sha256_hex(b"b")]
    size = model.CHUNK_SIZE + 5
    e = model.file_entry(size, model.chunked_digest(chunks), chunks)
    n = model.encode_node({"big": e})
    back = model.decode_node(n.data, n.oid)["big"]
    assert back.chunk_spans() == [(chunks[0], 0, model.CHUNK_SIZE), (chunks[1], model.CHUNK_SIZE, 5)]
    bad = model.encode_node({"big": model.file_entry(size, model.sha256_hex(b"x"), chunks)})
    with pytest.raises(IntegrityError):
        model.decode_node(bad.data)


def test_apply_changes_rewrites_only_changed_paths_and_diff_follows() -> None:
    m = MemStore()
    root = pathcopy.apply_changes(m.load, m.save, None, {
        "a/b/c.txt": f(b"c"), "a/d.txt": f(b"d"), "e/f.txt": f(b"f"), "empty": model.EMPTY_NODE.as_entry()})
    m.save(model.EMPTY_NODE)
    before = set(m.nodes)
    new = pathcopy.apply_changes(m.load, m.save, root.oid, {"a/b/c.txt": f(b"C"), "e/f.txt": None,
                                                         "g.txt": f(b"g")})
    written = set(m.nodes) - before
    assert len(written) == 3  # a/b, a and the root; e/ is gone, nothing else rewritten
    d = tree.diff(m.load, root.oid, new.oid)
    assert d.changed == ["a/b/c.txt"] and d.added == ["g.txt"] and d.removed == ["e/f.txt"]
    assert tree.lookup(m.load, new.oid, "a/d.txt") == f(b"d")
    assert tree.lookup(m.load, new.oid, "e/f.txt") is None
    assert [p for p, _ in tree.walk(m.load, new.oid)] == [
        "a", "a/b", "a/b/c.txt", "a/d.txt", "e", "empty", "g.txt"]


def test_apply_changes_validates_paths() -> None:
    m = MemStore()
    for bad in ("../x", "/abs", "a//b", "a/./b", ""):
        with pytest.raises(InvalidName):
            pathcopy.apply_changes(m.load, m.save, None, {bad: f(b"x")})


names = st.text(st.characters(blacklist_characters="/\0", blacklist_categories=["Cs"]),
                min_size=1, max_size=8).filter(lambda s: s not in (".", ".."))


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.lists(names, min_size=1, max_size=3).map("/".join),
                       st.binary(max_size=8), max_size=12))
def test_digest_depends_only_on_content(files: dict[str, bytes]) -> None:
    # paths that are both a file and a directory prefix cannot coexist; drop those
    paths = sorted(files)
    keep = {p: d for p, d in files.items() if not any(q.startswith(p + "/") for q in paths)}
    m1, m2 = MemStore(), MemStore()
    a = pathcopy.apply_changes(m1.load, m1.save, None, {p: f(d, mtime=1) for p, d in keep.items()})
    b = pathcopy.apply_changes(m2.load, m2.save, None,
                            {p: f(d, mtime=7) for p, d in reversed(list(keep.items()))})
    assert a.digest == b.digest
    assert {p for p, e in tree.walk(m1.load, a.oid) if e.kind == "file"} == set(keep)


def _slow_encode(entries: dict[str, model.Entry]) -> tuple[bytes, bytes]:
    names = sorted(entries, key=lambda n: n.encode("utf-8", "surrogateescape"))
    full = [[n, model._entry_dict(entries[n], False)] for n in names]
    content = [[n, model._entry_dict(entries[n], True)] for n in names]
    return model._canon({"v": 1, "e": full}), model._canon({"v": 1, "e": content})


entries_st = st.dictionaries(names, st.one_of(
    st.builds(lambda d, m, x: f(d, m, x), st.binary(max_size=4), st.integers(0, 2**62),
              st.booleans()),
    st.builds(lambda t: model.symlink_entry(t), names),
    st.builds(lambda m: model.EMPTY_NODE.as_entry(m), st.integers(0, 2**62)),
    st.builds(lambda u, e: model.ref_entry(model.RefInfo(u, etag=e), 3), names,
              st.none() | names),
    st.just(model.file_entry(model.CHUNK_SIZE + 1, model.chunked_digest(
        [EMPTY := model.EMPTY_DIGEST, EMPTY]), [EMPTY, EMPTY], True, 5)),
), max_size=6)


@settings(max_examples=150, deadline=None)
@given(entries_st)
def test_fast_encoder_equals_the_canonical_json(entries: dict[str, model.Entry]) -> None:
    node = model.encode_node(entries)
    data, cdata = _slow_encode(entries)
    assert node.data == data
    assert node.digest == model.sha256_hex(cdata)
    assert model.decode_node(node.data, node.oid) == entries


# --- split directories (index node over parts) ----------------------------------------------

class SplitStore:
    """Node objects in a dict, with the loader, indexer and saver the tree functions take."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def save(self, node: model.Node) -> None:
        for oid, data in model.node_objects(node):
            self.objects[oid] = data

    def load(self, oid: str) -> dict[str, model.Entry]:
        data = self.objects[oid]
        if model.is_index(data):
            return model.merge_parts(model.decode_index(data, oid), self.load)
        return model.decode_node(data, oid)

    def index(self, oid: str) -> list[model.Part] | None:
        data = self.objects[oid]
        return model.decode_index(data, oid) if model.is_index(data) else None


def _f(n: int) -> model.Entry:
    return model.file_entry(n, model.sha256_hex(str(n).encode()))


def _tiny_split():
    from unittest import mock
    return mock.patch.multiple(model, SPLIT_AT=8, PART_AVG=3)


def test_big_directories_split_into_parts_deterministically():
    entries = {f"f{i:05d}": _f(i) for i in range(3 * model.SPLIT_AT)}
    node = model.encode_node(entries)
    assert model.is_index(node.data) and len(node.index) > 3 and node.parts
    assert sum(p.entries for p in node.index) == len(entries) and node.count == len(entries)
    assert model.encode_node(dict(reversed(list(entries.items())))).oid == node.oid
    s = SplitStore()
    s.save(node)
    assert s.load(node.oid) == entries
    small = model.encode_node(dict(list(entries.items())[:model.SPLIT_AT]))
    assert not model.is_index(small.data) and not small.parts
    # the content digest ignores mtimes, as for plain nodes
    stamped = {n: model.with_mtime(e, 123) for n, e in entries.items()}
    assert model.encode_node(stamped).digest == node.digest != model.encode_node(stamped).oid


def test_a_tampered_index_or_part_is_refused():
    with _tiny_split():
        node = model.encode_node({f"n{i}": _f(i) for i in range(20)})
        s = SplitStore()
        s.save(node)
        first = node.index[0]
        bad = node.data.replace(f'"t":{first.entries}'.encode(), f'"t":{first.entries + 1}'.encode(), 1)
        with pytest.raises(IntegrityError):
            model.decode_index(bad, node.oid)  # the id no longer matches
        with pytest.raises(IntegrityError, match="does not hold"):
            model.merge_parts(model.decode_index(bad), s.load)
        swapped = model.decode_index(node.data)[::-1]
        with pytest.raises(IntegrityError, match="out of order"):
            model.decode_index(model._encode_index(swapped, ()).data)


names = st.text(alphabet="abcdefgh", min_size=1, max_size=3)
files = st.integers(0, 50).map(_f)


@settings(max_examples=200, deadline=None)
@given(base=st.dictionaries(names, files, max_size=40),
       sub=st.dictionaries(names, files, max_size=40),
       changes=st.dictionaries(names, st.one_of(st.none(), files), max_size=8),
       sub_changes=st.dictionaries(names, st.one_of(st.none(), files), max_size=8))
def test_updating_a_split_directory_part_by_part_equals_encoding_it_whole(
        base, sub, changes, sub_changes):
    with _tiny_split():
        s = SplitStore()
        subnode = model.encode_node(sub)
        s.save(subnode)
        tree = dict(base)
        tree["zz"] = subnode.as_entry()
        root = model.encode_node(tree)
        s.save(root)
        all_changes = dict(changes)
        all_changes.update({f"zz/{k}": v for k, v in sub_changes.items()})
        got = pathcopy.apply_changes(s.load, s.save, root.oid, all_changes, s.index)
        plain = pathcopy.apply_changes(s.load, s.save, root.oid, all_changes)  # whole nodes
        want_sub = dict(sub)
        for k, v in sub_changes.items():
            if v is None:
                want_sub.pop(k, None)
            else:
                want_sub[k] = v
        want = dict(base)
        want["zz"] = model.encode_node(want_sub).as_entry()
        for k, v in changes.items():
            if v is None:
                want.pop(k, None)
            else:
                want[k] = v
        assert got.oid == plain.oid == model.encode_node(want).oid
        assert s.load(got.oid) == s.load(plain.oid)


def test_split_updates_at_real_sizes_equal_whole_encodings():
    """The real SPLIT_AT/PART_AVG: removing names that end parts (parts merge), adding names
    (parts split) and shrinking below SPLIT_AT (a plain node again) give the same node as
    encoding the result whole."""
    import random
    rnd = random.Random(7)
    s = SplitStore()
    entries = {f"f{i:06d}": _f(i) for i in range(model.SPLIT_AT + 2000)}
    node = model.encode_node(entries)
    s.save(node)
    enders = [p.first for p in node.index[1:]]  # each follows a name that ends a part
    for round_ in range(12):
        names = sorted(entries)
        changes: dict[str, model.Entry | None] = {}
        for n in rnd.sample(names, 5):
            changes[n] = None
        for n in rnd.sample(enders, 2):  # the name before a part's first one ended a part
            i = names.index(n) if n in entries else 0
            changes[names[max(0, i - 1)]] = None
        for _ in range(5):
            changes[f"g{rnd.randrange(10**6):06d}"] = _f(rnd.randrange(100))
        if round_ == 11:  # shrink below SPLIT_AT: a plain node again
            changes.update({n: None for n in names[: len(names) - model.SPLIT_AT + 10]})
        got = pathcopy.apply_changes(s.load, s.save, node.oid, changes, s.index)
        for n, e in changes.items():
            if e is None:
                entries.pop(n, None)
            else:
                entries[n] = e
        want = model.encode_node(entries)
        assert got.oid == want.oid and got.digest == want.digest
        assert bool(got.index) == (len(entries) > model.SPLIT_AT)
        node = got
