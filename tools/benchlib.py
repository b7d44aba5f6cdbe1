"""Helpers shared by the tools/bench_*.py scripts: cold caches and the table row format."""

from __future__ import annotations

import os
import subprocess


def drop_caches() -> None:
    """Flush and (as root) drop the page cache, so the next read is a first read."""
    subprocess.run(["sync"], check=True)
    if os.geteuid() == 0:
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
        except OSError:
            pass


def time_row(metric: str, value: float, baseline: float) -> None:
    """``| metric | value s | baseline s | ratio |`` (times: lower is better)."""
    print(f"| {metric} | {value:.2f} s | {baseline:.2f} s | {value / baseline:.2f}x |",
          flush=True)
