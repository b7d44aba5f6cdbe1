"""Drafts: writable copy-on-write trees over a version, and the commit engine that makes them one.

Layout: ``draft.py`` (one draft), ``overlay.py`` (its nodes), ``journal.py`` (its journal and
snapshot), ``area.py`` (the drafts of a mount), ``files.py``, ``ops.py`` and ``rights.py`` (the
file-system operations under ``drafts/``, open draft files, who may do what) and ``commit.py``
(the commit engine and the control requests for drafts).  Nothing heavy is imported here.
"""
