"""Make server-supplied names safe as local path components on Linux, macOS and Windows.

XNAT labels, scan types, series descriptions and file names are free text typed by people
and scanners; none may escape the output directory or be unusable on another OS.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
_RESERVED = {
    "CON",
    "PRN",
    "AUX",
    "NUL",
    *(f"COM{i}" for i in range(10)),
    *(f"LPT{i}" for i in range(10)),
}
MAX_COMPONENT = 200


def safe_component(name: str) -> str:
    """One path component: no separators, no control or Windows-reserved characters, no
    ``.``/``..``, no trailing dots or spaces, no reserved device names, at most 200 chars."""
    text = _UNSAFE.sub("_", name).strip(" ")
    text = text.rstrip(". ") or "_"
    if text in (".", ".."):
        text = "_"
    if text.split(".", 1)[0].upper() in _RESERVED:
        text = "_" + text
    if len(text) > MAX_COMPONENT:
        text = text[:MAX_COMPONENT]
    return text


def safe_relpath(path: str) -> list[str]:
    """A relative path's components, each made safe; absolute and ``..`` parts neutralised."""
    parts = [p for p in re.split(r"[/\\]+", path) if p not in ("", ".")]
    return [safe_component("_" if p == ".." else p) for p in parts] or ["_"]
