"""Wording shared by every layer's messages."""

from __future__ import annotations


def counted(n: int, noun: str) -> str:
    """``1 session``, ``2 sessions``: a count with its noun in the right number."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
