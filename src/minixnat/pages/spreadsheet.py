"""Seed 002's Upload Spreadsheet: subjects from a CSV, read by the client's rules (pure).

The rules are those of ``xnat-downloader upload subjects.csv`` (the client's
``plan/upload.py``; the two packages never import each other, so they are written twice and
a test holds them together): cells are separated by commas, semicolons or tabs, as the
header row shows; the first row names the columns; the label column is
``label``, ``subject``, ``subject_label``, ``subject_id`` or ``id``; ``gender``, ``dob``,
``yob`` and ``handedness`` are demographics; every other non-empty cell is a custom field.
A row is refused for a bad or repeated label or more cells than the header; blank rows are
passed over.  The values themselves (a gender, a date) are checked by the REST API each
row is sent to, as the client's rows are.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field

LABEL_COLUMNS = ("label", "subject", "subject_label", "subject_id", "id")
DEMOGRAPHICS = ("gender", "dob", "yob", "handedness")
_LABEL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class SheetError(ValueError):
    """The spreadsheet as a whole cannot be read (no header, no label column)."""


@dataclass
class Row:
    """One data row: its line in the file, the label, and what to set (or why not)."""

    line: int
    label: str
    demographics: dict[str, str] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    refused: str = ""


def separator(header: str) -> str:
    """The cell separator a spreadsheet exported its CSV with: whichever of comma,
    semicolon (where the comma is the decimal mark) and tab the header row holds most of
    outside quotes; a comma if it holds none."""
    unquoted = "".join(header.split('"')[::2])
    found = [(unquoted.count(c), -i, c) for i, c in enumerate((",", ";", "\t"))]
    count, _, best = max(found)
    return best if count else ","


def read(text: str) -> list[Row]:
    """Every non-blank data row of a subjects CSV, refused ones with their reason."""
    text = text.lstrip("\ufeff")
    reader = csv.DictReader(io.StringIO(text), delimiter=separator(text.partition("\n")[0]))
    if not reader.fieldnames:
        raise SheetError("The spreadsheet is empty: its first row must name the columns.")
    columns = {name.strip().lower(): name for name in reader.fieldnames if name}
    label_column = next((columns[c] for c in LABEL_COLUMNS if c in columns), None)
    if label_column is None:
        raise SheetError(
            f"The spreadsheet has no label column: name one of {', '.join(LABEL_COLUMNS)} "
            "in its first row."
        )
    rows: list[Row] = []
    seen: dict[str, int] = {}
    for record in reader:
        line = reader.line_num
        if not any((v or "").strip() for v in record.values() if isinstance(v, str)):
            continue
        label = (record.get(label_column) or "").strip()
        row = Row(line, label)
        rows.append(row)
        if None in record:
            row.refused = "the row has more cells than the header"
        elif not _LABEL.match(label):
            row.refused = "the label must be letters, digits, '_', '-' or '.'"
        elif label in seen:
            row.refused = f"the label repeats line {seen[label]}"
        if row.refused:
            continue
        seen[label] = line
        for key, original in columns.items():
            value = (record.get(original) or "").strip()
            if original == label_column or not value:
                continue
            if key in DEMOGRAPHICS:
                row.demographics[key] = value
            else:
                row.fields[original.strip()] = value
    return rows


def template(custom_fields: list[str]) -> str:
    """The header row to fill in: label, the demographics, then the project's own fields."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(["label", *DEMOGRAPHICS, *custom_fields])
    return out.getvalue()
