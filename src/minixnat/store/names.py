"""What a label or file name may contain: the checks every write path shares.

Control characters (CR, LF, NUL and the rest of C0, DEL, C1) never belong in a name: a CR
or LF in a stored file name would later break every response header or listing line that
carries it.  They are refused at the door, before anything is stored.
"""

from __future__ import annotations

import re

from minixnat.store.records import StoreError

# Unicode's category Cc is exactly C0, DEL and C1; a regex finds them fastest (every URL
# segment of every request is checked).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def control_characters(text: str) -> list[str]:
    """The control characters in ``text``, as ``U+XXXX`` names, in order of appearance."""
    return [f"U+{ord(c):04X}" for c in _CONTROL.findall(text)]


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds any control character (the check without the names)."""
    return _CONTROL.search(text) is not None


def check_name(kind: str, text: str) -> None:
    """Raise :class:`StoreError` naming the characters if ``text`` holds control characters."""
    bad = control_characters(text)
    if bad:
        msg = (
            f"the {kind} {text!r} contains control characters ({', '.join(sorted(set(bad)))}); "
            "remove them and send it again"
        )
        raise StoreError(msg)
