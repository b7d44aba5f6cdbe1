"""The S3 read path, counted on the moto server: a GET of an object is one request signed by
the store and sent through the client's own connection pool (s3get.py: the daemon's CPU per
small file is the mount's S3 first-read rate), and every other answer is the client's as
before (issue 13)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from artifactfs import model
from artifactfs.errors import IntegrityError, NotFound, StoreUnavailable
from artifactfs.fetch import read_piece
from artifactfs.store import open_store
from artifactfs.store.base import Store

pytestmark = pytest.mark.s3


@pytest.fixture
def store(s3_store_uri: str) -> Iterator[Store]:
    s = open_store(s3_store_uri)
    yield s
    s.close()


def test_a_get_is_one_plain_request(store: Store, s3_requests: Any) -> None:
    data = os.urandom(5000)
    digest = model.sha256_hex(data)
    store.put(model.object_key(digest), data)
    s3_requests.requests.clear()
    s3_requests.sdk = 0
    assert read_piece(store, digest, len(data)) == data
    with pytest.raises(NotFound):  # a missing key: one request, not a second ask
        store.get(model.object_key("0" * 64))
    with pytest.raises(IntegrityError, match="missing"):
        read_piece(store, "1" * 64)
    assert [(m, status) for m, _, _, status in s3_requests.requests] == \
        [("GET", 200), ("GET", 404), ("GET", 404)]
    assert s3_requests.sdk == 0 and s3_requests.presigned == 0


def test_other_answers_go_the_clients_way(s3_server: str, s3_requests: Any) -> None:
    """A missing bucket answers 404 NoSuchBucket to the plain GET: asked again through the
    client, it is the same clear error as before."""
    missing = open_store("s3://afs-no-such-bucket/p")
    with pytest.raises(StoreUnavailable, match="S3 bucket not found: afs-no-such-bucket"):
        missing.get("objects/x")
    assert len(s3_requests.of("GET")) == 2 and s3_requests.sdk == 1


def test_awkward_keys(store: Store, s3_requests: Any) -> None:
    """Keys botocore percent-encodes come back through the plain GET (its URL and signature
    are botocore's: tests/unit/test_s3get.py)."""
    for key in ("records/a b+c~d", "records/ünï/cødé=1&x", "records/!*'()"):
        store.put(key, key.encode())
        s3_requests.sdk = 0
        assert store.get(key) == key.encode()
        assert s3_requests.sdk == 0
