"""What the command modules share: the context object, artifact references with the default
project, ``--json`` and its output, sizes, progress bars.

Every command module (cli.py, manage_cli.py, mount/cli.py, drafts_cli.py, repro_cli.py…)
is imported by every CLI run, and so is this one: nothing heavy is imported at module level
(the repo, trio and boto3 load only in the command that needs them).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import config as config_mod
from .names import Ref, parse_ref

if TYPE_CHECKING:
    from .repo import Repo

F = TypeVar("F", bound=Callable[..., Any])


class Ctx:
    """What every command receives: the resolved configuration and a lazily opened repo."""

    def __init__(self, cfg: config_mod.Config) -> None:
        self.config = cfg
        self._repo: Repo | None = None

    @property
    def repo(self) -> Repo:
        """The store's repo; a directory store must exist (see :meth:`open_repo`)."""
        return self.open_repo(create=False)

    def open_repo(self, create: bool) -> Repo:
        """The repo, opened once; ``create`` lets a command that makes versions (``put``) make
        a new directory store, for the others a missing one is an error, not a new empty
        store."""
        if self._repo is None:
            from .repo import Repo  # not imported for commands that only talk to a daemon

            if not create:
                config_mod.check_store_exists(self.config.store)
            self._repo = Repo(self.config.store, notify_mounts=True,
                              private=self.config.restricts_reads)
        return self._repo

    def ref(self, value: str, allow_ref: bool = True) -> Ref:
        """``PROJECT/NAME[:REF]``, or ``NAME[:REF]`` in the default project."""
        return artifact_ref(value, self.config, allow_ref)


pass_ctx = click.make_pass_decorator(Ctx)


def artifact_ref(value: str, cfg: config_mod.Config | None = None,
                 allow_ref: bool = True) -> Ref:
    """``PROJECT/NAME[:REF]``, or ``NAME[:REF]`` in :func:`config.default_project`."""
    bare = "/" not in value.partition(":")[0]
    project = config_mod.default_project(cfg) if bare else None
    return parse_ref(value, default_project=project, allow_ref=allow_ref)


def json_option(f: F) -> F:
    """``--json``: print the command's documented JSON shape (docs/cli.md) instead of text."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON (shapes in docs/cli.md).")(f)


def echo_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2))


def fmt_size(n: float) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@contextmanager
def progress(label: str, total: int | None) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr when it is a terminal; otherwise nothing."""
    if not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(length=total or 0, label=label, file=sys.stderr,
                           show_eta=True, show_percent=True) as bar:
        yield bar.update
