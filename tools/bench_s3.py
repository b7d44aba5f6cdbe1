"""S3 benchmark against a local moto server: put/get and a mounted first read, each next to
boto3's own upload_file/download_file of the same bytes from the same endpoint.

Prints markdown rows ``| metric | value | baseline | ratio |``.  BENCH_SMALL=1 shrinks sizes.
moto is slow per byte, so absolute numbers say little about real S3; the ratios compare the
tool with boto3 over the same server.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time

import boto3
from benchlib import drop_caches, time_row
from moto.server import ThreadedMotoServer

SMALL = os.environ.get("BENCH_SMALL") == "1"
SIZE = (32 if SMALL else 256) << 20
CLI = [sys.executable, "-m", "artifactfs"]




def timed(fn: object, *args: object) -> float:
    drop_caches()
    t = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - t


def run(*args: str) -> None:
    subprocess.run([*CLI, *args], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    work = tempfile.mkdtemp(prefix="artifactfs-bench-s3-")
    mnt = os.path.join(work, "mnt")
    try:
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bench")
        src = os.path.join(work, "src")
        os.makedirs(src)
        path = os.path.join(src, "weights.bin")
        with open(path, "wb") as f:
            for _ in range(SIZE // (8 << 20)):
                f.write(os.urandom(8 << 20))
        store = "s3://bench/store"
        mib = SIZE >> 20
        base = timed(s3.upload_file, path, "bench", "raw/weights.bin")
        put = timed(run, "--store", store, "put", src, "--name", "p/w", "--type", "model")
        time_row(f"S3 put {mib} MiB (vs boto3 upload_file)", put, base)
        base = timed(s3.download_file, "bench", "raw/weights.bin", os.path.join(work, "dl"))
        def one_stream() -> None:
            body = s3.get_object(Bucket="bench", Key="raw/weights.bin")["Body"]
            with open(os.path.join(work, "dl1"), "wb") as f:
                for piece in body.iter_chunks(1 << 20):
                    f.write(piece)

        stream = timed(one_stream)
        get = timed(run, "--store", store, "get", "p/w", "--root", os.path.join(work, "got"))
        time_row(f"S3 get {mib} MiB (vs boto3 download_file)", get, base)
        time_row(f"S3 get {mib} MiB (vs one boto3 get_object stream)", get, stream)
        os.makedirs(mnt)
        cache = os.path.join(work, "cache")
        try:
            run("--store", store, "mount", mnt, "--cache-dir", cache)
        except subprocess.CalledProcessError:
            print("| S3 mount first read | mount failed | | |")
            return
        try:
            target = os.path.join(mnt, "p", "w", "latest", "weights.bin")
            drop_caches()
            t = time.perf_counter()
            subprocess.run(["cat", target], check=True, stdout=subprocess.DEVNULL)
            first = time.perf_counter() - t
            time_row(f"S3 mount first read {mib} MiB (vs boto3 download_file)", first, base)
            time_row(f"S3 mount first read {mib} MiB (vs one boto3 get_object stream)", first, stream)
        finally:
            subprocess.run([*CLI, "unmount", mnt], check=False)
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", mnt], check=False)
        shutil.rmtree(work, ignore_errors=True)
        server.stop()


if __name__ == "__main__":
    main()
