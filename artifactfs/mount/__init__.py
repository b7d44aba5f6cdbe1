"""The mount: a FUSE daemon that shows every version of a store as a read-only directory.

Layout: ``cache.py`` (LMDB manifest cache), ``blobcache.py`` (verified content cache),
``inodes.py``, ``listings.py`` (expiring catalog views), ``namespace.py`` (the tree and every
operation, no FUSE), ``ops.py`` (pyfuse3 glue), ``daemon.py`` (the daemon), ``registry.py``,
``control.py``, ``cli.py`` and ``helper.py`` (``mount.artifactfs``).  Writable drafts are
``artifactfs/drafts/``'s.  Nothing heavy is imported here.
"""
