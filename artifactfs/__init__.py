"""artifactfs: versioned ML artifacts as a lazy, verified filesystem.

The public Python API is shaped like wandb's (``init``, ``Run``, ``Artifact``, ``Api``).  It is
imported on first use, so ``import artifactfs`` (and every CLI start) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ArtifactfsError

if TYPE_CHECKING:
    from .api import Api, Artifact, ArtifactCollection, ArtifactEntry, Run, init

__all__ = ["Api", "Artifact", "ArtifactCollection", "ArtifactEntry", "ArtifactfsError", "Run",
           "init"]
__version__ = "0.1.0"
_API = frozenset(__all__) - {"ArtifactfsError"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'artifactfs' has no attribute {name!r}")
