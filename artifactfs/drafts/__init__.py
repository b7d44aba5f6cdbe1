"""Drafts: writable copy-on-write trees over a version, and the commit engine that makes them one.

Layout: ``draft.py`` (one draft), ``overlay.py`` (its nodes), ``journal.py`` (its journal and
snapshot), ``area.py`` (the drafts of a mount), ``ops.py``, ``files.py`` and ``rights.py``
(the file-system operations under ``drafts/``, open draft files, who may do what) and
``commit.py`` (the commit engine, callable with no daemon).  Of the mount, this package uses
only its seam (``mount/draftport.py``), the inode table and the manifest cache; the mount's
namespace never imports it (tests/unit/test_imports.py).  Nothing heavy is imported here.
"""
