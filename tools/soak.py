"""Soak: writers and gc in several processes against one store for a bounded time, every live
version verified after each round.  Prints one table row per store; exits 1 if any version
was ever found broken (the target is 0).

Each writer process owns an artifact and, in a loop, puts a directory whose content it
changes a little (and sometimes turns back to an earlier state, so that it reuses the objects
of versions it deleted), commits changes on top of its latest version, and deletes versions;
half of every writer's files are shared with the others.  A gc process runs ``gc`` with grace
0 all the time.  The main process verifies, round after round, every live version of every
artifact with a fresh repo (every tree node and byte read back from the store and checked):
a version that is live and can not be read whole is broken.

    tools/soak [--seconds 60] [--writers 3] [--store local|s3|both]

S3 runs against a local moto server (one request at a time, as tests/conftest.py explains:
that gives moto the atomic conditional writes real S3 has).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def writer(store: str, wid: int, until: float, src: str) -> dict[str, int]:
    from artifactfs import model
    from artifactfs.errors import ArtifactfsError
    from artifactfs.gcsync import GcRace
    from artifactfs.repo import Repo

    repo, rng, name = Repo(store), random.Random(wid), f"w{wid}"
    os.makedirs(src, exist_ok=True)
    states = [rng.randrange(4) for _ in range(12)]
    stats = {"puts": 0, "commits": 0, "deletes": 0, "refused": 0, "errors": 0}
    while time.time() < until:
        op = rng.random()
        try:
            if op < 0.45:
                if rng.random() < 0.3:
                    states = [rng.randrange(4) for _ in states]  # often an earlier state
                else:
                    states[rng.randrange(len(states))] = rng.randrange(4)
                for i, s in enumerate(states):
                    owner = "shared" if i % 2 else name
                    Path(src, f"f{i:02d}").write_text(f"{owner} file {i} state {s}\n" * 40)
                repo.put_path(src, "soak", name, "dataset")
                stats["puts"] += 1
            elif op < 0.75:
                base = repo.catalog.latest("soak", name)
                data = f"commit {rng.randrange(6)}\n".encode() * 30
                digest = model.sha256_hex(data)
                with repo.writing(f"soak commit {name}") as w:
                    w.store.put_if_absent(model.object_key(digest), data)
                    repo.commit_entries("soak", name, "dataset",
                                        {f"c/{rng.randrange(3)}": model.file_entry(len(data),
                                                                                   digest)},
                                        base=base, session=w)
                stats["commits"] += 1
            else:
                live = repo.catalog.versions("soak", name) if stats["puts"] else []
                if live:
                    victim = rng.choice(live)
                    repo.catalog.delete_version("soak", name, victim.version, True)
                    stats["deletes"] += 1
        except GcRace:
            stats["refused"] += 1  # a write gc could not leave alone: refused, nothing published
        except (ArtifactfsError, OSError) as e:  # e.g. a base version gc took: counted
            stats["errors"] += 1
            print(f"writer {wid}: {type(e).__name__}: {e}", file=sys.stderr)
    return stats


def collector(store: str, until: float) -> dict[str, int]:
    from artifactfs import gc
    from artifactfs.repo import Repo

    stats = {"gc_runs": 0, "gc_deleted": 0, "gc_failed": 0}
    while time.time() < until:
        try:
            report = gc.collect(Repo(store), grace_seconds=0)
        except gc.GcFailed as e:  # it met a broken tree (the verifier counts those)
            stats["gc_failed"] += 1
            print(f"gc: {e}", file=sys.stderr)
            time.sleep(0.5)
            continue
        stats["gc_runs"] += 1
        stats["gc_deleted"] += report.deleted
    return stats


def verify_round(store: str, scratch: str) -> tuple[int, list[str]]:
    """(versions verified, labels of broken ones): every live version read back whole."""
    from artifactfs.errors import IntegrityError, NotFound
    from artifactfs.repo import Repo

    repo = Repo(store)
    checked, broken = 0, []
    for name in repo.catalog.collections("soak"):
        for rec in repo.catalog.versions("soak", name, damaged={}):
            fresh = Repo(store)  # no cached node: everything from the store
            with tempfile.TemporaryDirectory(dir=scratch) as out:
                try:
                    fresh.download(rec, out)
                    checked += 1
                except (IntegrityError, NotFound) as e:
                    now = fresh.catalog.get_version("soak", name, rec.version)[0]
                    if now.is_live():  # deleted meanwhile is fine; live and unreadable is not
                        broken.append(f"{rec.label}: {e}")
    return checked, broken


def soak(store: str, seconds: float, writers: int, scratch: str) -> dict[str, object]:
    until = time.time() + seconds
    me = [sys.executable, str(Path(__file__).resolve())]
    procs = [subprocess.Popen([*me, "--role", "writer", "--store-uri", store, "--id", str(i),
                               "--until", str(until), "--src", f"{scratch}/src{i}"],
                              stdout=subprocess.PIPE, text=True) for i in range(writers)]
    procs.append(subprocess.Popen([*me, "--role", "gc", "--store-uri", store, "--until",
                                   str(until)], stdout=subprocess.PIPE, text=True))
    rounds = checked = 0
    broken: list[str] = []
    while time.time() < until:
        c, b = verify_round(store, scratch)
        rounds, checked, broken = rounds + 1, checked + c, broken + b
    totals: dict[str, int] = {}
    for p in procs:
        out, _ = p.communicate(timeout=600)
        if p.returncode != 0 or not out.strip():
            raise SystemExit(f"a soak process failed (exit {p.returncode})")
        for k, v in json.loads(out.strip().splitlines()[-1]).items():
            totals[k] = totals.get(k, 0) + v
    c, b = verify_round(store, scratch)  # one last round with everything settled
    for line in broken + b:
        print(f"broken: {line}", file=sys.stderr)
    return {**totals, "rounds": rounds + 1, "verified": checked + c,
            "broken": len(broken) + len(b)}


def moto() -> tuple[object, str]:
    sys.path.insert(0, str(ROOT / "tests"))
    import logging

    import boto3
    from conftest import S3_CLEARED_ENV, S3_TEST_ENV, MotoS3Server

    for name in S3_CLEARED_ENV:
        os.environ.pop(name, None)
    os.environ.update(S3_TEST_ENV)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = MotoS3Server()
    server.start()
    os.environ["AWS_ENDPOINT_URL"] = server.url
    boto3.client("s3", endpoint_url=server.url).create_bucket(Bucket="soak")
    return server, "s3://soak/store"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--writers", type=int, default=3)
    ap.add_argument("--store", choices=["local", "s3", "both"], default="both")
    ap.add_argument("--role", choices=["writer", "gc"], help=argparse.SUPPRESS)
    ap.add_argument("--store-uri", help=argparse.SUPPRESS)
    ap.add_argument("--id", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--until", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--src", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role == "writer":
        print(json.dumps(writer(a.store_uri, a.id, a.until, a.src)))
        return
    if a.role == "gc":
        print(json.dumps(collector(a.store_uri, a.until)))
        return
    print("| store | seconds | writers | puts | commits | deletes | refused | errors | gc runs "
          "| objects gc took | rounds | versions verified | broken |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    failed = False
    for kind in (["local", "s3"] if a.store == "both" else [a.store]):
        with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
            server = None
            uri = os.path.join(scratch, "store")
            if kind == "s3":
                server, uri = moto()
            try:
                r = soak(uri, a.seconds, a.writers, scratch)
            finally:
                if server is not None:
                    server.stop()  # type: ignore[attr-defined]
        failed = failed or bool(r["broken"])
        print(f"| {kind} | {a.seconds:g} | {a.writers} | {r.get('puts', 0)} | "
              f"{r.get('commits', 0)} | {r.get('deletes', 0)} | {r.get('refused', 0)} | "
              f"{r.get('errors', 0)} | "
              f"{r.get('gc_runs', 0)} | {r.get('gc_deleted', 0)} | {r['rounds']} | "
              f"{r['verified']} | {r['broken']} |", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
