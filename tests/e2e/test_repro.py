"""Beyond W&B (issue 15): W&B manifest import/export and lineage pictures, through the CLI,
on the directory store and on S3."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def cli(store: str, *args: str, ok: bool = True, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ, ARTIFACTFS_STORE=store, **(env or {}))
    p = subprocess.run([sys.executable, "-m", "artifactfs", *args], capture_output=True,
                       text=True, env=e, timeout=120)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, bytes]:
    return {"train.csv": b"a,b\n1,2\n", "images/cat.png": os.urandom(50_000),
            "images/dog.png": os.urandom(9 * 1024 * 1024 + 5)}  # chunked in our store


def manifest_for(files: dict[str, bytes], refs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A manifest written by hand in W&B's documented format (version 1)."""
    contents = {p: {"digest": md5_b64(d), "size": len(d), "birthArtifactID": "QXJ0aWZhY3Q6MQ=="}
                for p, d in files.items()}
    contents.update(refs)
    return {"version": 1, "storagePolicy": "wandb-storage-policy-v1",
            "storagePolicyConfig": {"storageLayout": "V2"}, "contents": contents}


def test_wandb_manifest_import_and_export_round_trip(store_uri: str, tmp_path: Path,
                                                     files: dict[str, bytes],
                                                     s3_server: str) -> None:
    from artifactfs import s3util

    s3 = s3util.s3_client()
    bucket = f"raw-{os.urandom(4).hex()}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="raw/one.bin", Body=b"remote bytes")
    etag = s3.head_object(Bucket=bucket, Key="raw/one.bin")["ETag"].strip('"')
    local_ref = tmp_path / "nfs" / "shared.txt"
    local_ref.parent.mkdir()
    local_ref.write_bytes(b"on a shared disk\n")
    refs = {"remote/one.bin": {"digest": etag, "ref": f"s3://{bucket}/raw/one.bin", "size": 12,
                               "extra": {"etag": etag}},
            "nfs/shared.txt": {"digest": md5_b64(local_ref.read_bytes()),
                               "ref": f"file://{local_ref}", "size": 17},
            "web/page.html": {"digest": "https://example.invalid/page.html",
                              "ref": "https://example.invalid/page.html", "size": 100}}
    src = tmp_path / "download"
    for p, d in files.items():
        (src / p).parent.mkdir(parents=True, exist_ok=True)
        (src / p).write_bytes(d)
    manifest = tmp_path / "wandb_manifest.json"
    manifest.write_text(json.dumps(manifest_for(files, refs)))

    out = cli(store_uri, "import-wandb", str(manifest), "--files", str(src), "-n", "w/imp")
    assert out.stdout.split()[-1] == "w/imp:v0"
    listed = {e["path"]: e for e in json.loads(cli(store_uri, "ls", "w/imp", "--json").stdout)}
    assert set(listed) == set(files) | set(refs)
    assert listed["remote/one.bin"]["ref"] == f"s3://{bucket}/raw/one.bin"
    got = tmp_path / "got"
    cli(store_uri, "get", "w/imp", "--root", str(got), "--path-prefix", "remote/")
    assert (got / "remote" / "one.bin").read_bytes() == b"remote bytes"  # verified by ETag

    exp = tmp_path / "exp"
    cli(store_uri, "export-wandb", "w/imp:v0", "-o", str(exp))
    doc = json.loads((exp / "wandb_manifest.json").read_text())
    assert doc["version"] == 1 and doc["storagePolicy"] == "wandb-storage-policy-v1"
    want = manifest_for(files, refs)["contents"]
    for p, e in want.items():  # same MD5s, sizes and reference URIs
        assert doc["contents"][p]["digest"] == e["digest"], p
        assert doc["contents"][p]["size"] == e["size"], p
        assert doc["contents"][p].get("ref") == e.get("ref"), p
    for p, d in files.items():
        assert (exp / "files" / p).read_bytes() == d
    again = cli(store_uri, "import-wandb", str(exp), "-n", "w/imp")  # the export imports back
    assert again.stdout.split()[-1] == "w/imp:v0" and "unchanged" in again.stderr


def test_wandb_manifest_mistakes_are_clear_and_write_nothing(tmp_path: Path,
                                                              files: dict[str, bytes]) -> None:
    store = str(tmp_path / "store")
    src = tmp_path / "download"
    for p, d in files.items():
        (src / p).parent.mkdir(parents=True, exist_ok=True)
        (src / p).write_bytes(d)
    doc = manifest_for(files, {})
    doc["contents"]["train.csv"]["digest"] = md5_b64(b"other bytes")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    for args, words in [((str(bad), "--files", str(src)), "train.csv: MD5 differs"),
                        ((str(tmp_path / "nope.json"), "--files", str(src)), "no such manifest"),
                        ((str(src / "train.csv"),), "not a W&B manifest"),
                        ((str(bad),), "give --files DIR")]:
        p = cli(store, "import-wandb", *args, "-n", "w/bad", ok=False)
        assert p.returncode == 1 and p.stderr.startswith("error: ") and words in p.stderr, \
            p.stderr
        assert "Traceback" not in p.stderr
    assert "w/bad" not in cli(store, "versions", "w/bad", ok=False).stdout


def _lineage_store(store: str) -> dict[str, str]:
    """raw:v0 → prep → clean:v0 → train → model:v0 → eval → report:v0."""
    code = """
import artifactfs, sys
def step(job, inputs, out, kind):
    run = artifactfs.init(project="p", job_type=job)
    for i in inputs:
        run.use_artifact(i)
    a = artifactfs.Artifact(out, type=kind)
    with a.new_file("x.txt") as f:
        f.write(out)
    run.log_artifact(a, aliases=["best"] if out == "model" else [])
    print(job, run.id)
step("ingest", [], "raw", "dataset")
step("prep", ["raw:latest"], "clean", "dataset")
step("train", ["clean:latest"], "model", "model")
step("eval", ["model:latest", "clean:latest"], "report", "report")
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, ARTIFACTFS_STORE=store), timeout=120)
    assert p.returncode == 0, p.stderr
    return dict(line.split() for line in p.stdout.splitlines())


def test_lineage_graph_depth_formats_and_pictures(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    runs = _lineage_store(store)
    one = json.loads(cli(store, "lineage", "p/model", "--format", "json").stdout)
    assert one["logged_by"]["run"] == f"p/{runs['train']}"
    assert one["logged_by"]["inputs"] == ["p/clean:v0"]
    assert {n["id"] for n in one["nodes"]} == {
        "p/model:v0", f"run:p/{runs['train']}", f"run:p/{runs['eval']}", "p/clean:v0",
        "p/report:v0"}
    three = json.loads(cli(store, "lineage", "p/model:best", "--depth", "3", "--format",
                           "json").stdout)
    ids = {n["id"] for n in three["nodes"]}
    assert {"p/raw:v0", f"run:p/{runs['ingest']}", f"run:p/{runs['prep']}"} <= ids
    assert len(ids) == 8 and not three["truncated"]
    model = next(n for n in three["nodes"] if n["id"] == "p/model:v0")
    assert model["aliases"] == ["latest", "best"] and model["type"] == "model"
    assert {"from": "p/clean:v0", "to": f"run:p/{runs['eval']}"} in three["edges"]

    if shutil.which("dot") is None:
        p = cli(store, "lineage", "p/model", "--format", "png", "-o", str(tmp_path / "g.png"),
                ok=False)
        assert p.returncode == 1 and "graphviz" in p.stderr
        pytest.skip("graphviz is not installed (tools/setup installs it)")
    dot = cli(store, "lineage", "p/model", "--depth", "3", "--format", "dot").stdout
    laid = json.loads(subprocess.run(["dot", "-Tjson"], input=dot, capture_output=True,
                                     text=True, check=True).stdout)
    assert len(laid["objects"]) == 8  # graphviz's own count of the nodes it drew
    png = tmp_path / "g.png"
    cli(store, "lineage", "p/model", "--depth", "3", "--format", "png", "-o", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    svg = cli(store, "lineage", "p/model", "--format", "svg").stdout
    assert svg.lstrip().startswith("<?xml") and "p/model:v0" in svg
    no_dot = cli(store, "lineage", "p/model", "--format", "png", "-o", str(png), ok=False,
                 env={"PATH": "/nonexistent"})
    assert no_dot.returncode == 1 and "install the graphviz package" in no_dot.stderr


def test_dot_escapes_hostile_labels() -> None:
    from artifactfs import lineage

    g = {"artifact": 'p/x:v0', "nodes": [
        {"id": 'p/x:v0', "kind": "artifact", "type": 'a"];\nevil [label="pwn', "aliases": []},
        {"id": "run:p/r", "kind": "run", "job_type": "j\\\x07"}],
        "edges": [{"from": "p/x:v0", "to": "run:p/r"}]}
    text = lineage.dot(g)
    body = [line for line in text.splitlines() if "->" not in line]
    assert all(line.count('"') % 2 == 0 for line in body)  # every quote closed on its line
    assert "\nevil" not in text and "\x07" not in text
