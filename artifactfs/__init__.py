"""artifactfs: versioned ML artifacts as a lazy, verified filesystem.

The public Python API is shaped like wandb's (``init``, ``Run``, ``Artifact``, ``Api``).
Importing this package imports nothing heavy (no boto3, no pyfuse3).
"""

from __future__ import annotations

from .api import Api, Artifact, ArtifactCollection, ArtifactEntry, Run, init
from .errors import ArtifactfsError

__all__ = ["Api", "Artifact", "ArtifactCollection", "ArtifactEntry", "ArtifactfsError", "Run",
           "init"]
__version__ = "0.1.0"
