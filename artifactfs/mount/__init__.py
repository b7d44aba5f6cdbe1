"""The mount: a FUSE daemon that shows every version of a store as a read-only directory.

Layout: ``cache.py`` (LMDB manifest cache), ``blobcache.py`` (verified content cache),
``inodes.py``, ``listings.py`` (expiring catalog views), ``namespace.py`` (the tree and every
operation, no FUSE), ``ops.py`` (pyfuse3 glue), ``draftport.py`` (the seam through which the
namespace reaches ``artifactfs/drafts/``), ``daemon.py`` (the daemon), ``registry.py``,
``protocol.py``, ``control.py`` and ``requests.py`` (the control channel: its words, its
socket, its draft requests), ``cli.py`` and ``helper.py`` (``mount.artifactfs``).  Nothing
heavy is imported here.
"""
