"""Tree nodes of a store, for the catalog: stored, fetched, verified, cached, and read part by
part (a base of :class:`~artifactfs.catalog.Catalog`).

Every node fetched is verified against its object id before it is decoded (model.py).  What is
subtle:

* :meth:`Nodes.load_node` joins a split directory's parts into one mapping (the commit engine
  and small jobs); :meth:`Nodes.open_node` instead streams its entries part by part from a
  given name, checking each part against its index (names, totals), and caches no part: a walk
  of a million-entry directory holds one part at a time, and a lookup reads only the part that
  can hold the name.
* The cache is bounded by entries, not nodes (a node holds up to 4 096 entries).
* :meth:`Nodes.check_root` binds a version record to its tree: the root's re-derived content
  digest and totals must equal the record's, so a record pointing at another version's tree
  is refused instead of served as itself.  Below the root, object ids bind the bytes and the
  walks check declared totals edge by edge (tree.py); child content digests are not
  re-derived.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from . import model, tree
from .errors import IntegrityError, NotFound
from .records import VersionRecord
from .store.base import Store

CACHE_ENTRIES = 100_000  # decoded entries the node cache keeps at most


def node_bytes(store: Store, oid: str) -> bytes:
    """The stored bytes of tree node ``oid`` (unverified: decoding verifies them)."""
    try:
        return store.get(model.object_key(oid))
    except NotFound:
        raise IntegrityError(f"tree node {oid} is missing from the store") from None


def nodes_bytes(store: Store, oids: Sequence[str], threads: int = 8) -> Iterator[bytes]:
    """The bytes of many nodes (a split directory's parts), in order, ``threads`` at a time:
    on S3 the round trips overlap instead of adding up."""
    if len(oids) <= 1:
        yield from (node_bytes(store, o) for o in oids)
        return
    with ThreadPoolExecutor(min(threads, len(oids)), thread_name_prefix="parts") as pool:
        window: deque[Future[bytes]] = deque()
        for oid in oids:
            window.append(pool.submit(node_bytes, store, oid))
            if len(window) >= 2 * threads:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


class Nodes:
    """The node methods of the catalog (thread-safe)."""

    store: Store

    def _init_nodes(self, node_cache_size: int) -> None:
        self._nodes: OrderedDict[str, dict[str, model.Entry]] = OrderedDict()
        self._nodes_max = node_cache_size
        self._cached_entries = 0
        self._indexes: dict[str, list[model.Part] | None] = {}  # oid -> parts (None: plain)
        self._roots_ok: set[tuple[str, str, int, int]] = set()  # see check_root
        self._nodes_lock = threading.Lock()

    def save_node(self, node: model.Node) -> None:
        """Store a node (and the parts that came with it, first)."""
        for oid, data in model.node_objects(node):
            self.store.put_if_absent(model.object_key(oid), data)

    def _node_bytes(self, oid: str) -> bytes:
        return node_bytes(self.store, oid)

    def load_node(self, oid: str) -> dict[str, model.Entry]:
        """Entries of tree node ``oid`` (a split directory's parts joined), fetched once and
        verified against its id."""
        with self._nodes_lock:
            hit = self._nodes.get(oid)
            if hit is not None:
                self._nodes.move_to_end(oid)
                return hit
        data = self._node_bytes(oid)
        parts = model.decode_index(data, oid) if model.is_index(data) else None
        if parts is None:
            entries = model.decode_node(data, oid)
        else:
            oids = [p.oid for p in parts]
            got = dict(zip(oids, nodes_bytes(self.store, oids), strict=True))
            # a part is a plain node, never an index
            entries = model.merge_parts(parts, lambda o: model.decode_node(got[o], o))
        self._remember(oid, entries, parts)
        return entries

    def load_index(self, oid: str) -> list[model.Part] | None:
        """The parts of a split directory's node, ``None`` for a plain node."""
        with self._nodes_lock:
            if oid in self._indexes:
                return self._indexes[oid]
        data = self._node_bytes(oid)
        if not model.is_index(data):
            self._remember(oid, model.decode_node(data, oid), None)
            return None
        parts = model.decode_index(data, oid)
        self._remember(oid, None, parts)
        return parts

    def open_node(self, oid: str, lo: str = "") -> tree.Opened:
        """A node's declared totals and its entries in name order from ``lo`` (tree.Opener):
        a split directory's parts are read as the walk reaches them, none kept."""
        parts = self.load_index(oid)
        if parts is None:
            entries = self.load_node(oid)
            size, count = tree.totals(entries.values())
            return tree.Opened(size, count, len(entries), tree.sorted_from(entries, lo))
        keys = [model.sort_key(p.first) for p in parts]
        i = max(0, bisect.bisect_right(keys, model.sort_key(lo)) - 1) if lo else 0
        return tree.Opened(sum(p.size for p in parts), sum(p.count for p in parts),
                           sum(p.entries for p in parts), self._parts_from(parts, i, lo))

    def _parts_from(self, parts: list[model.Part], i: int, lo: str
                    ) -> Iterator[tuple[str, model.Entry]]:
        def one(j: int, data: bytes) -> Iterator[tuple[str, model.Entry]]:
            p = parts[j]
            entries = model.decode_node(data, p.oid)
            model.check_part(parts, j, sorted(model.sort_key(n) for n in entries))
            if tree.totals(entries.values()) != (p.size, p.count):
                raise IntegrityError(f"part {p.oid} does not hold the totals its index says")
            return tree.sorted_from(entries, lo if j == i else "")

        # the first two parts one by one (a lookup or a prefix stops within them), then
        # the rest several at a time
        for j in range(i, min(i + 2, len(parts))):
            yield from one(j, self._node_bytes(parts[j].oid))
        rest = [p.oid for p in parts[i + 2:]]
        for j, data in enumerate(nodes_bytes(self.store, rest), start=i + 2):
            yield from one(j, data)

    def _remember(self, oid: str, entries: dict[str, model.Entry] | None,
                  parts: list[model.Part] | None) -> None:
        with self._nodes_lock:
            self._indexes[oid] = parts
            if len(self._indexes) > 64 * self._nodes_max:
                self._indexes.pop(next(iter(self._indexes)))
            if entries is not None and oid not in self._nodes:
                self._nodes[oid] = entries
                self._cached_entries += len(entries)
                while self._nodes and (len(self._nodes) > self._nodes_max
                                       or self._cached_entries > CACHE_ENTRIES):
                    self._cached_entries -= len(self._nodes.popitem(last=False)[1])

    def root_checked(self, rec: VersionRecord) -> bool:
        with self._nodes_lock:
            return (rec.root, rec.digest, rec.size, rec.file_count) in self._roots_ok

    def check_root(self, rec: VersionRecord, data: bytes | None = None) -> None:
        """Raise unless ``rec``'s digest and totals are those of its root node (see the module
        docstring), whose bytes a caller that just fetched them passes as ``data``; checked
        once per root, digest and totals."""
        if self.root_checked(rec):
            return
        node = tree.reencode(self._node_bytes(rec.root) if data is None else data, rec.root)
        if (node.digest, node.size, node.count) != (rec.digest, rec.size, rec.file_count):
            raise IntegrityError(f"version record {rec.label} does not match its root tree "
                                 f"{rec.root} (digest, size or file count differ)")
        with self._nodes_lock:
            self._roots_ok.add((rec.root, rec.digest, rec.size, rec.file_count))
