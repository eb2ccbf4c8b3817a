"""Archive storage: SQLite metadata and files on disk."""

from minixnat.store.db import Store, StoreError

__all__ = ["Store", "StoreError"]
