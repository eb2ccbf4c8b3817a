"""The download page's decisions, pure: what the chosen sessions offer, and the form → spec.

Seed 000's middle column lists each scan format and each scan type found across the chosen
sessions, with a count of scans.  Options are taken from every *listed* session and counted
over the *chosen* ones, so unticking a session sets counts to zero instead of moving rows
under the user's pointer.  The page's script repeats :func:`tally` in the browser; without
script the "Update counts" button asks the server.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

#: How an untyped scan is named on the page and in the catalog spec (XNAT sends "NULL").
NO_TYPE = "NULL"
METHODS = ("zip", "xml", "client")
#: Form name → the XAPI download option it turns on.
PATH_OPTIONS = {
    "include_project": "projectIncludedInPath",
    "include_subject": "subjectIncludedInPath",
    "simplify": "simplified",
}


@dataclass(frozen=True)
class ScanChoice:
    type: str
    formats: tuple[str, ...]
    snapshot: str = ""  # the URL of its snapshot thumbnail, if it has one


@dataclass(frozen=True)
class SessionChoices:
    """What one image session offers the download page."""

    id: str
    project: str
    subject: str
    label: str
    date: str = ""
    modality: str = ""
    scans: tuple[ScanChoice, ...] = ()
    resources: tuple[str, ...] = ()
    assessors: tuple[str, ...] = ()
    recons: tuple[str, ...] = ()

    @property
    def spec_name(self) -> str:
        """The ``project:subject:label:id`` form the XAPI download request takes."""
        return f"{self.project}:{self.subject}:{self.label}:{self.id}"


@dataclass(frozen=True)
class Option:
    value: str
    count: int
    picture: str = ""  # a thumbnail of one scan of this type

    @property
    def label(self) -> str:
        return "(no type)" if self.value == NO_TYPE else self.value


@dataclass
class Tallies:
    formats: list[Option] = field(default_factory=list)
    types: list[Option] = field(default_factory=list)
    resources: list[Option] = field(default_factory=list)
    assessors: list[Option] = field(default_factory=list)
    recons: list[Option] = field(default_factory=list)


def _options(
    listed: Iterable[str], counted: Iterable[str], pictures: dict[str, str] | None = None
) -> list[Option]:
    counts = Counter(counted)
    pictures = pictures or {}
    return [
        Option(value, counts[value], pictures.get(value, ""))
        for value in sorted(set(listed), key=str.lower)
    ]


def tally(sessions: Sequence[SessionChoices], chosen: set[str]) -> Tallies:
    """Every option of the listed ``sessions``, counted over the ``chosen`` session ids.

    Formats and types count scans; resources, assessors and reconstructions count the
    sessions (or objects) that have them.
    """
    picked = [s for s in sessions if s.id in chosen]
    return Tallies(
        formats=_options(
            (f for s in sessions for sc in s.scans for f in sc.formats),
            (f for s in picked for sc in s.scans for f in set(sc.formats)),
        ),
        types=_options(
            (sc.type or NO_TYPE for s in sessions for sc in s.scans),
            (sc.type or NO_TYPE for s in picked for sc in s.scans),
            _first_pictures(sessions),
        ),
        resources=_options(
            (r for s in sessions for r in s.resources),
            (r for s in picked for r in set(s.resources)),
        ),
        assessors=_options(
            (a for s in sessions for a in s.assessors), (a for s in picked for a in s.assessors)
        ),
        recons=_options(
            (r for s in sessions for r in s.recons), (r for s in picked for r in s.recons)
        ),
    )


def _first_pictures(sessions: Sequence[SessionChoices]) -> dict[str, str]:
    """One snapshot thumbnail per scan type: the first listed scan of the type with one."""
    found: dict[str, str] = {}
    for s in sessions:
        for sc in s.scans:
            if sc.snapshot:
                found.setdefault(sc.type or NO_TYPE, sc.snapshot)
    return found


class FormError(ValueError):
    """The download form asks for something impossible; the message says what to change."""


@dataclass(frozen=True)
class DownloadRequest:
    """A checked download form: the XAPI selection and how the user wants it delivered."""

    spec: dict[str, object]
    method: str
    chosen: tuple[str, ...]


def form_values(form: Sequence[tuple[str, str]], *names: str) -> list[str]:
    """The non-empty values given for any of ``names``, first occurrence first, no repeats."""
    return list(dict.fromkeys(value for key, value in form if key in names and value))


def read_form(form: Sequence[tuple[str, str]], listed: Sequence[SessionChoices]) -> DownloadRequest:
    """The XAPI download spec for a submitted download form; :class:`FormError` if unusable.

    Only listed sessions may be chosen (the page lists what the user may read), and the
    selection must name something to fetch.
    """
    by_id = {s.id: s for s in listed}
    chosen = form_values(form, "pick")
    unknown = [c for c in chosen if c not in by_id]
    if unknown:
        raise FormError(f"Session {unknown[0]} is not on this page; reload it and choose again.")
    if not chosen:
        raise FormError("Choose at least one session.")
    fields = dict(form)
    method = fields.get("method", "")
    if method not in METHODS:
        raise FormError("Choose a download method: ZIP, XML catalog or download client.")
    formats, types = form_values(form, "format"), form_values(form, "type")
    extras = {
        "resources": form_values(form, "resource"),
        "assessors": form_values(form, "assessor"),
        "reconstructions": form_values(form, "recon"),
    }
    if not (formats and types) and not any(extras.values()):
        raise FormError(
            "Choose at least one scan format and one scan type, or a session resource, "
            "assessor or reconstruction."
        )
    sessions = [by_id[c] for c in chosen]
    spec: dict[str, object] = {
        "sessions": [s.spec_name for s in sessions],
        "projectIds": sorted({s.project for s in sessions}),
        "scan_formats": formats if types else [],
        "scan_types": types if formats else [],
        **extras,
        "options": [option for name, option in PATH_OPTIONS.items() if name in fields],
    }
    return DownloadRequest(spec, method, tuple(chosen))
