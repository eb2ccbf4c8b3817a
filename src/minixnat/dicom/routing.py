"""Where a received DICOM study goes: XNAT's project, subject and session rules (pure).

XNAT decides each of the three separately, first rule that yields a value wins:

- **project**: ``Project:`` in Patient Comments (0010,4000), then in Study Comments
  (0032,4000); then Study Description (0008,1030); then Accession Number (0008,0050).
  A value counts only when it names a project that exists (by ID or alias).  After the
  DICOM rules, a project bound to the called AE title; otherwise the study is *unassigned*.
- **subject**: ``Subject:`` in Patient Comments, then Study Comments; then Patient Name.
- **session**: ``Session:`` in Patient Comments, then Study Comments; then Patient ID.

``AA:TRUE`` in either comment field asks for the study to bypass the prearchive.  In the
comment fields the assignments are separated by whitespace, commas or semicolons, and all
other text is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# Keyword, optional spaces, colon, value up to the next separator.
_ASSIGNMENT = re.compile(r"(?i)\b(project|subject|session|aa)\s*:\s*([^\s,;]+)")


@dataclass(frozen=True)
class Fields:
    """The header fields routing reads (text as stored, stripped)."""

    patient_comments: str = ""
    study_comments: str = ""
    study_description: str = ""
    accession_number: str = ""
    patient_name: str = ""
    patient_id: str = ""


@dataclass(frozen=True)
class Route:
    """Where a study goes.  ``project`` is the project's ID, or "" for unassigned;
    ``subject``/``session`` "" leave the choice to the importer's defaults."""

    project: str
    subject: str
    session: str
    auto_archive: bool
    project_rule: str  # which rule named the project, for the log


def comment_values(text: str) -> dict[str, str]:
    """``{"project": …, "subject": …, "session": …, "aa": …}`` found in a comment field
    (keys lower case; the first assignment of each keyword wins)."""
    found: dict[str, str] = {}
    for key, value in _ASSIGNMENT.findall(text):
        found.setdefault(key.lower(), value)
    return found


def route(
    fields: Fields,
    project_of: Callable[[str], str | None],
    *,
    called_ae: str = "",
    bound: Mapping[str, str] | None = None,
) -> Route:
    """The route of a study with ``fields``.

    ``project_of(name)`` gives the ID of the project that ``name`` names (an ID or an
    alias) or None; ``bound`` maps called AE titles to project IDs.
    """
    patient = comment_values(fields.patient_comments)
    study = comment_values(fields.study_comments)
    candidates = [
        ("Patient Comments", patient.get("project", "")),
        ("Study Comments", study.get("project", "")),
        ("Study Description", fields.study_description),
        ("Accession Number", fields.accession_number),
    ]
    project, rule = "", "unassigned"
    for name, value in candidates:
        found = project_of(value.strip()) if value.strip() else None
        if found:
            project, rule = found, name
            break
    else:
        bound_project = (bound or {}).get(called_ae.strip())
        found = project_of(bound_project) if bound_project else None
        if found:
            project, rule = found, f"AE title {called_ae.strip()}"
    subject = patient.get("subject") or study.get("subject") or fields.patient_name
    session = patient.get("session") or study.get("session") or fields.patient_id
    auto = any(v.get("aa", "").upper() == "TRUE" for v in (patient, study))
    return Route(project, subject.strip(), session.strip(), auto, rule)
