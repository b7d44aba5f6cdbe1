"""The manifest cache's fast tree-node decoder agrees with ``model.decode_node`` (the
reference) on valid nodes, and refuses whatever the reference refuses."""

from __future__ import annotations

import dataclasses
import json
import marshal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifactfs import model
from artifactfs.errors import IntegrityError
from artifactfs.mount.cache import decode_raw, entry_from_raw, pack_entry

D = "ab" * 32


def reference(data: bytes, oid: str) -> list[tuple[bytes, tuple]]:
    entries = model.decode_node(data, oid)
    return sorted((n.encode("utf-8", "surrogateescape"), marshal.loads(pack_entry(e)))
                  for n, e in entries.items())


names = st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
                min_size=1, max_size=80).filter(lambda n: n not in (".", ".."))
plain = st.one_of(
    st.builds(lambda s, x, m: model.file_entry(s, D, executable=x, mtime_ns=m),
              st.integers(0, model.CHUNK_SIZE), st.booleans(), st.integers(0, 2**62)),
    st.builds(lambda s, n, m: model.Entry("dir", size=s, digest=D, oid="cd" * 32, count=n,
                                          mtime_ns=m),
              st.integers(0, 2**40), st.integers(0, 10**6), st.integers(0, 2**62)),
)
other = st.one_of(
    st.builds(lambda t: model.symlink_entry(t), st.text(min_size=1).filter(lambda t: "\0" not in t)),
    st.just(model.file_entry(model.CHUNK_SIZE + 1, model.chunked_digest([D, D]), chunks=(D, D))),
    st.just(model.ref_entry(model.RefInfo(uri="s3://b/k", etag="e"), 5)),
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(names, st.one_of(plain, plain, other), max_size=12))
def test_fast_decoder_matches_the_reference(entries):
    node = model.encode_node(entries)
    got = decode_raw(node.data, node.oid)
    assert got == reference(node.data, node.oid)
    for (name, raw), (n2, e2) in zip(got, sorted(entries.items(), key=lambda kv: kv[0].encode(
            "utf-8", "surrogateescape")), strict=True):
        assert name == n2.encode("utf-8", "surrogateescape")
        assert entry_from_raw(raw) == e2


def _node(items: list) -> tuple[bytes, str]:
    data = json.dumps({"v": 1, "e": items}, separators=(",", ":")).encode()
    return data, model.sha256_hex(data)


BAD = [
    [["a", {"k": "f", "s": -1, "d": D}]],
    [["a", {"k": "f", "s": True, "d": D}]],
    [["a", {"k": "f", "s": 1, "d": "XY" * 32}]],
    [["a", {"k": "f", "s": 1, "d": D, "m": -5}]],
    [["a", {"k": "f", "s": model.CHUNK_SIZE + 1, "d": D}]],
    [["..", {"k": "f", "s": 1, "d": D}]],
    [["a/b", {"k": "f", "s": 1, "d": D}]],
    [["a\0", {"k": "f", "s": 1, "d": D}]],
    [["x" * 256, {"k": "f", "s": 1, "d": D}]],
    [["a", {"k": "f", "s": 1, "d": D}], ["a", {"k": "f", "s": 2, "d": D}]],
    [["a", {"k": "d", "s": 1, "d": D, "n": 1}]],
    [["a", {"k": "d", "s": 1, "d": D, "o": D, "n": 1.5}]],
    [["a", {"k": "q"}]],
    [["a"]],
    ["a"],
]


@pytest.mark.parametrize("items", BAD)
def test_fast_decoder_refuses_what_the_reference_refuses(items):
    data, oid = _node(items)
    with pytest.raises(IntegrityError):
        model.decode_node(data, oid)
    with pytest.raises(IntegrityError):
        decode_raw(data, oid)


def test_wrong_digest_and_bad_documents():
    data, oid = _node([["a", {"k": "f", "s": 1, "d": D}]])
    assert decode_raw(data, oid) == reference(data, oid)
    with pytest.raises(IntegrityError):
        decode_raw(data, "00" * 32)
    for doc in (b"not json", b"[]", b'{"v":2,"e":[]}', b'{"v":1}'):
        with pytest.raises(IntegrityError):
            decode_raw(doc, model.sha256_hex(doc))


def test_split_nodes_go_into_the_manifest_cache_whole_and_checked(tmp_path, monkeypatch):
    from artifactfs.mount.cache import ManifestCache
    monkeypatch.setattr(model, "SPLIT_AT", 8)
    monkeypatch.setattr(model, "PART_AVG", 3)
    entries = {f"n{i:03d}": model.file_entry(i, D) for i in range(40)}
    node = model.encode_node(entries)
    assert node.index and len(node.index) > 2
    objects = dict(model.node_objects(node))
    cache = ManifestCache(str(tmp_path / "m"))
    try:
        with pytest.raises(IntegrityError, match="split"):
            cache.put_node(node.oid, node.data)  # its parts can not be read
        assert cache.put_node(node.oid, node.data, lambda oids: [objects[o] for o in oids]) \
            == (40, 0)
        assert cache.index(node.oid) == (True, list(node.index))
        assert cache.index(node.index[0].oid) == (False, None)  # parts are not cached alone
        got = cache.entries(node.oid, None, 100)
        assert [(n.decode(), entry_from_raw(r)) for n, r in got] == sorted(entries.items())
        # a part that is not the one named, or an index that lies about a part, is refused
        swapped = [objects[node.index[1].oid]] + [objects[p.oid] for p in node.index[1:]]
        with pytest.raises(IntegrityError, match="does not match its digest"):
            cache.put_node(node.oid, node.data, lambda oids: swapped)
        lying = model._encode_index(
            [dataclasses.replace(node.index[0], entries=node.index[0].entries + 1),
             *node.index[1:]], ())
        with pytest.raises(IntegrityError, match="does not hold"):
            cache.put_node(lying.oid, lying.data, lambda oids: [objects[o] for o in oids])
    finally:
        cache.close()
