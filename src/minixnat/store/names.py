"""What a label or file name may contain: the checks every write path shares.

Control characters (CR, LF, NUL and the rest of C0, DEL, C1) never belong in a name: a CR
or LF in a stored file name would later break every response header or listing line that
carries it.  They are refused at the door, before anything is stored.
"""

from __future__ import annotations

import unicodedata

from minixnat.store.records import StoreError


def control_characters(text: str) -> list[str]:
    """The control characters in ``text``, as ``U+XXXX`` names, in order of appearance."""
    return [f"U+{ord(c):04X}" for c in text if unicodedata.category(c) == "Cc"]


def check_name(kind: str, text: str) -> None:
    """Raise :class:`StoreError` naming the characters if ``text`` holds control characters."""
    bad = control_characters(text)
    if bad:
        msg = (
            f"the {kind} {text!r} contains control characters ({', '.join(sorted(set(bad)))}); "
            "remove them and send it again"
        )
        raise StoreError(msg)
