"""``--prune``: remove what earlier runs downloaded for sessions that have vanished.

Only files the state records (this tool wrote and verified them) are removed, with their
state rows; then the folders they leave empty.  Nothing else under the output is touched.
"""

from __future__ import annotations

import os
from pathlib import Path

from xnat_downloader.errors import LocalWriteError
from xnat_downloader.transfer.localfs import write_failure
from xnat_downloader.transfer.state import State


def prune_files(outdir: Path, state: State, session_ids: list[str], uris: set[str]) -> int:
    """Remove the recorded files whose URI is in ``uris`` or under one of the sessions
    (``…/experiments/{id}/…`` and the session's own documents); return how many."""
    marks = [f"/experiments/{sid}/" for sid in session_ids]
    documents = [f"/experiments/{sid}?" for sid in session_ids]
    removed = 0
    for record in state.all_records():
        uri = record.uri
        if uri not in uris and not any(m in uri for m in (*marks, *documents)):
            continue
        path = outdir / record.local
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise LocalWriteError(write_failure(path, exc)) from exc
        state.forget(record.local)
        removed += 1
        _remove_empty_parents(path.parent, outdir)
    return removed


def _remove_empty_parents(folder: Path, top: Path) -> None:
    top = top.resolve()
    current = folder.resolve()
    while current != top and top in current.parents:
        try:
            os.rmdir(current)
        except OSError:
            return  # not empty (or not ours to remove)
        current = current.parent
