"""Tying a child process's life to its parent's, for the server's helper processes."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # prctl(2)


def end_with_parent(parent: int, sig: signal.Signals) -> None:
    """In a child process: have the kernel send ``sig`` when ``parent`` dies, however it
    dies (``kill -9`` runs no cleanup).  If the parent is already gone, exit now.  On
    systems other than Linux this does nothing."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(0)
