"""The CLI and the API on an S3 store (a moto server on 127.0.0.1 over HTTP)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import artifactfs

pytestmark = pytest.mark.s3


def cli(store: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "artifactfs", "--store", store, *args],
                       capture_output=True, text=True, timeout=120)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def test_cli_on_s3(s3_store_uri: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "small.txt").write_text("small")
    big = os.urandom(17 * 1024 * 1024 + 3)  # three chunks
    (src / "big.bin").write_bytes(big)
    (src / "link").symlink_to("d/small.txt")
    out = cli(s3_store_uri, "put", str(src), "--name", "p/a", "--type", "dataset", "--alias",
              "best")
    assert out.stdout.strip().splitlines()[-1] == "p/a:v0"
    assert cli(s3_store_uri, "put", str(src), "--name", "p/a", "--type",
               "dataset").stdout.strip() == "p/a:v0"
    (src / "d" / "small.txt").write_text("changed")
    assert cli(s3_store_uri, "put", str(src), "--name", "p/a", "--type",
               "dataset").stdout.strip() == "p/a:v1"
    vs = json.loads(cli(s3_store_uri, "versions", "p/a", "--json").stdout)
    assert [(v["version"], v["aliases"]) for v in vs] == [(0, ["best"]), (1, ["latest"])]
    cli(s3_store_uri, "alias", "add", "p/a:v1", "best")
    assert json.loads(cli(s3_store_uri, "info", "p/a:best", "--json").stdout)["version"] == 1
    root = Path(cli(s3_store_uri, "get", "p/a:v0", "--root", str(tmp_path / "got")).stdout
                .strip())
    assert hashlib.sha256((root / "big.bin").read_bytes()).digest() == \
        hashlib.sha256(big).digest()
    assert (root / "d" / "small.txt").read_text() == "small"
    assert os.readlink(root / "link") == "d/small.txt"
    bad = cli(s3_store_uri, "put", str(src), "--name", "p/a", "--type", "model", ok=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


def test_eight_concurrent_puts_on_s3(s3_store_uri: str, tmp_path: Path) -> None:
    procs = []
    for i in range(8):
        d = tmp_path / f"w{i}"
        d.mkdir()
        (d / "x.txt").write_text(f"writer {i}")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "artifactfs", "--store", s3_store_uri, "put", str(d),
             "--name", "p/race", "--type", "dataset"], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    labels = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        labels.append(out.strip().splitlines()[-1])
    assert sorted(labels) == sorted(f"p/race:v{i}" for i in range(8))


def test_api_and_distributed_draft_on_s3(s3_store_uri: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    writers = [artifactfs.init(project="p", job_type="shard", store=s3_store_uri)
               for _ in range(2)]
    for i, run in enumerate(writers):
        art = artifactfs.Artifact("shards", type="dataset")
        with art.new_file(f"s{i}.txt") as f:
            f.write(str(i))
        run.upsert_artifact(art, distributed_id="job-1")
    final = artifactfs.Artifact("shards", type="dataset")
    writers[0].finish_artifact(final, distributed_id="job-1")
    assert final.version == "v0"
    api = artifactfs.Api(store=s3_store_uri)
    got = api.artifact("p/shards:latest")
    root = Path(got.download())
    assert sorted(p.name for p in root.iterdir()) == ["s0.txt", "s1.txt"]
