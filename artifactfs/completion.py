"""Shell completion (bash, zsh, fish) of commands, options and artifact names read from the
store: ``vis<TAB>`` → ``vision/cats``, ``vision/cats:<TAB>`` → ``v0 v1 latest best``.

``artifactfs completion SHELL`` prints the script to source (click's, with bash's changed as
below); ``shell_complete=complete_ref`` (or ``complete_name``) on a click argument completes
artifact references.

What is subtle:

* completion parses the command line without running the group's callback, so the
  configuration (``--store``, ``--config``) is built here from the root context's parameters;
* it must answer at once even when the store is an S3 bucket that does not answer: the store
  is read in a daemon thread abandoned after ``ARTIFACTFS_COMPLETE_SECONDS`` (default 2);
* bash splits words at ``:`` (``COMP_WORDBREAKS``), so click's bash script would see
  ``vision/cats : v``: ours passes ``COMP_LINE``/``COMP_POINT``, splits the line itself, and
  answers only the part after the last ``:`` (what bash replaces);
* a name typed without ``/`` completes both to projects (``vision/``) and to names in the
  default project; when one project matches, its names are offered at once (so bash does not
  end the word after ``vision/``).
"""

from __future__ import annotations

import os
import shlex
import threading
from collections.abc import Callable
from typing import Any

import click
from click.shell_completion import BashComplete, CompletionItem, add_completion_class

from . import config as config_mod

COMPLETE_SECONDS = float(os.environ.get("ARTIFACTFS_COMPLETE_SECONDS", "2"))
Completer = Callable[[click.Context, click.Parameter, str], list[CompletionItem]]


def _config(c: click.Context) -> config_mod.Config:
    root = c.find_root()
    cfg = getattr(root.obj, "config", None)
    if isinstance(cfg, config_mod.Config):
        return cfg
    return config_mod.load(root.params.get("config_file")).with_flags(
        store=root.params.get("store"))


def bounded(fn: Callable[[], list[str]], seconds: float) -> list[str]:
    """``fn()``, or nothing if it fails or takes longer than ``seconds`` (then abandoned)."""
    out: list[list[str]] = []

    def work() -> None:
        try:
            out.append(fn())
        except Exception:  # a completion never fails loudly
            out.append([])

    t = threading.Thread(target=work, name="complete", daemon=True)
    t.start()
    t.join(seconds)
    return out[0] if out else []


def candidates(cfg: config_mod.Config, incomplete: str, with_refs: bool) -> list[str]:
    """Completions of ``incomplete`` from the store (see the module docstring)."""
    from .catalog import Catalog
    from .store import open_store

    config_mod.check_store_exists(cfg.store)
    cat = Catalog(open_store(cfg.store))
    body, colon, _ = incomplete.partition(":")
    if colon:
        if not with_refs:
            return []
        project, _, name = body.rpartition("/")
        return [f"{body}:{r}" for r in refs(cat, project or config_mod.default_project(cfg),
                                            name)]
    if "/" in body:
        project, _, name = body.partition("/")
        return [f"{project}/{n}" for n in cat.collections(project) if n.startswith(name)]
    projects = [p for p in cat.projects() if p.startswith(body)]
    bare = [n for n in cat.collections(config_mod.default_project(cfg)) if n.startswith(body)]
    if len(projects) == 1 and not bare:
        return [f"{projects[0]}/{n}" for n in cat.collections(projects[0])]
    return [f"{p}/" for p in projects] + bare


def refs(cat: Any, project: str, name: str) -> list[str]:
    """``vN`` of the live versions, ``latest`` and the custom aliases of one artifact."""
    versions = [f"v{r.version}" for r in cat.versions(project, name)]
    return [*versions, "latest", *sorted(cat.aliases(project, name))]


def _completer(with_refs: bool) -> Completer:
    def complete(c: click.Context, _param: click.Parameter, incomplete: str
                 ) -> list[CompletionItem]:
        try:
            cfg = _config(c)
        except Exception:
            return []
        found = bounded(lambda: candidates(cfg, incomplete, with_refs), COMPLETE_SECONDS)
        return [CompletionItem(v) for v in found if v.startswith(incomplete)]

    return complete


complete_ref: Completer = _completer(with_refs=True)    # PROJECT/NAME[:REF]
complete_name: Completer = _completer(with_refs=False)  # PROJECT/NAME

_SOURCE_BASH = """\
%(complete_func)s() {
    local IFS=$'\\n'
    local response
    response=$(env COMP_LINE="$COMP_LINE" COMP_POINT=$COMP_POINT \\
        %(complete_var)s=bash_complete $1)
    for completion in $response; do
        IFS=',' read type value <<< "$completion"
        if [[ $type == 'dir' ]]; then
            COMPREPLY=()
            compopt -o dirnames
        elif [[ $type == 'file' ]]; then
            COMPREPLY=()
            compopt -o default
        elif [[ $type == 'plain' ]]; then
            COMPREPLY+=("$value")
        fi
    done
    return 0
}

complete -o nosort -F %(complete_func)s %(prog_name)s
"""


class LineBashComplete(BashComplete):
    """click's bash completion, reading ``COMP_LINE`` so that ``P/N:REF`` is one word."""

    source_template = _SOURCE_BASH
    _cut = ""  # what bash does not replace: the current word up to its last ':'

    def get_completion_args(self) -> tuple[list[str], str]:
        line = os.environ.get("COMP_LINE", "")
        line = line[:int(os.environ.get("COMP_POINT", len(line)))]
        try:
            words = shlex.split(line)
        except ValueError:  # an open quote: complete the words before it
            words = line.split()
        if not line or line[-1].isspace():
            words.append("")
        self._cut = words[-1].rpartition(":")[0] + ":" if ":" in words[-1] else ""
        return words[1:-1], words[-1]

    def format_completion(self, item: CompletionItem) -> str:
        value = item.value
        if item.type == "plain" and self._cut and value.startswith(self._cut):
            value = value[len(self._cut):]
        return f"{item.type},{value}"


add_completion_class(LineBashComplete, "bash")

SHELLS = ("bash", "fish", "zsh")


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL (commands, options, artifact names and
    versions).  Enable it with ``eval "$(artifactfs completion bash)"`` in ~/.bashrc (zsh:
    the same in ~/.zshrc; fish: save it as ~/.config/fish/completions/artifactfs.fish)."""
    from click.shell_completion import get_completion_class

    root = click.get_current_context().find_root()
    cls = get_completion_class(shell)
    if cls is None:  # click knows all three
        raise click.UsageError(f"no completion for {shell}")
    comp = cls(root.command, {}, "artifactfs", "_ARTIFACTFS_COMPLETE")
    click.echo(comp.source())
__all__ = ["LineBashComplete", "candidates", "complete_name", "complete_ref", "completion"]
