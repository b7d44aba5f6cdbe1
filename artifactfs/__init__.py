"""artifactfs: versioned ML artifacts as a lazy, verified filesystem.

The public Python API is shaped like wandb's (``import artifactfs as wandb``: ``init``, ``run``,
``Artifact``, ``Api``, ``log_artifact`` …).  It is imported on first use, so ``import
artifactfs`` (and every CLI start) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ArtifactfsError

if TYPE_CHECKING:
    from . import data_types
    from .api import (
        Api,
        Artifact,
        ArtifactCollection,
        ArtifactEntry,
        ArtifactType,
        Run,
        Settings,
        finish,
        init,
        link_model,
        log_artifact,
        log_model,
        login,
        use_artifact,
        use_model,
    )
    from .data_types import PartitionedTable, Table

    run: Run | None

__all__ = ["Api", "Artifact", "ArtifactCollection", "ArtifactEntry", "ArtifactType",
           "ArtifactfsError", "PartitionedTable", "Run", "Settings", "Table", "data_types",
           "finish", "init", "link_model", "log_artifact", "log_model", "login", "run",
           "use_artifact", "use_model"]
__version__ = "0.1.0"
_API = frozenset(__all__) - {"ArtifactfsError", "PartitionedTable", "Table", "data_types", "run"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from . import api
        return getattr(api, name)
    if name == "run":  # the current run (None before init and after finish), as wandb.run
        from . import api
        return api.current_run()
    if name in ("Table", "PartitionedTable"):
        from . import data_types
        return getattr(data_types, name)
    if name == "data_types":
        import importlib
        return importlib.import_module(".data_types", __name__)
    raise AttributeError(f"module 'artifactfs' has no attribute {name!r}")
