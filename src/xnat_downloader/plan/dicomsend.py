"""Pure decisions of a DICOM send: the target, the routing comment, the associations.

Nothing here touches the network or the disk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from xnat_downloader.errors import UsageError

# DICOM limits an association to 128 presentation contexts (one per SOP class and
# transfer syntax pair proposed); a send that needs more opens associations per group.
MAX_CONTEXTS = 128
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable ASCII but backslash


@dataclass(frozen=True)
class Target:
    """A DICOM peer: ``AE@HOST:PORT``."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_target(text: str) -> Target:
    """``AE@HOST:PORT`` (an IPv6 host in brackets); UsageError naming what is wrong."""
    title, at, address = text.rpartition("@")
    if not at or not title:
        raise UsageError(f"--to {text!r}: give the receiver as AE@HOST:PORT, e.g. XNAT@pacs:8104")
    if not _AE_TITLE.match(title) or not title.strip():
        raise UsageError(
            f"--to {text!r}: the AE title {title!r} must be 1-16 printable ASCII characters"
        )
    host, colon, port_text = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"--to {text!r}: give the receiver's host and port as AE@HOST:PORT")
    return Target(title.strip(), host, int(port_text))


@dataclass(frozen=True)
class DicomFile:
    """One DICOM file to send, as its header describes it."""

    path: Path
    size: int
    sop_class: str
    sop_uid: str
    transfer_syntax: str
    study_uid: str
    series_uid: str
    series_number: str

    @property
    def context(self) -> tuple[str, str]:
        return self.sop_class, self.transfer_syntax


def routing_comment(project: str, subject: str, session: str) -> str:
    """The Patient Comments (0010,4000) text that routes a study on an XNAT receiver,
    or "" when nothing is to be routed."""
    parts = [
        f"{key}:{value}"
        for key, value in (("Project", project), ("Subject", subject), ("Session", session))
        if value
    ]
    return " ".join(parts)


def check_routing_value(flag: str, value: str) -> None:
    """XNAT reads these values up to the first space, comma or semicolon: refuse others."""
    if value and not re.fullmatch(r"[A-Za-z0-9_.\-]+", value):
        raise UsageError(
            f"{flag} {value!r}: XNAT's routing takes letters, digits, '_', '-' and '.' only"
        )


def context_groups(files: Iterable[DicomFile]) -> list[list[DicomFile]]:
    """The files split so that no group needs more than MAX_CONTEXTS presentation contexts
    (almost always one group); files keep their order within a group."""
    groups: list[tuple[set[tuple[str, str]], list[DicomFile]]] = []
    for item in files:
        for contexts, members in groups:
            if item.context in contexts or len(contexts) < MAX_CONTEXTS:
                contexts.add(item.context)
                members.append(item)
                break
        else:
            groups.append(({item.context}, [item]))
    return [members for _, members in groups]


# Status codes of a C-STORE response (PS3.4 B.2.3): 0x0000 success; 0xB000, 0xB006 and
# 0xB007 are warnings (the instance was stored, possibly coerced); anything else failed.
WARNINGS = (0xB000, 0xB006, 0xB007)


def stored(status: int) -> bool:
    return status == 0x0000 or status in WARNINGS
