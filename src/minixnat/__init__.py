"""minixnat: a small XNAT-compatible archive server.

It serves an archive root (SQLite metadata plus files in XNAT's on-disk layout) over XNAT's
REST API, closely enough that xnatpy, pyxnat and xnatutils work against it unchanged.  It
never imports :mod:`xnat_downloader`: it knows XNAT's URLs and shapes on its own.
"""

__version__ = "0.1.0"
