"""``python -m artifactfs`` runs the command line."""

from .cli import main

main()
