"""Snapshots, as XNAT's WebBasedQCImageCreator makes them: a picture of each scan.

- ``render``: pixel values of one slice to XNAT's full-size and thumbnail GIFs (pure);
- ``generate``: one run over a session's scans, stored in one transaction;
- ``worker``: the background thread that takes queued runs from the workflow table.
"""
