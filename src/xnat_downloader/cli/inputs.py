"""Parsing what users type: dates, ``@FILE`` lists, chooser answers.  Pure; errors name the
value (and the file line) that is wrong."""

from __future__ import annotations

import argparse
import csv
import io
import re
from collections.abc import Collection, Iterable
from datetime import date, datetime
from pathlib import Path

from xnat_downloader.errors import UsageError

HEADER_WORDS = {
    "id",
    "label",
    "session",
    "sessions",
    "subject",
    "subjects",
    "experiment",
    "experiments",
    "project",
    "projects",
    "session_id",
    "session_label",
    "subject_id",
    "subject_label",
    "xnat_id",
}
_BAD_ID = re.compile(r"[\s/\\?#%\x00-\x1f]")


def parse_day(text: str, flag: str) -> date:
    try:
        return datetime.strptime(text.strip(), "%Y-%m-%d").date()
    except ValueError as exc:
        msg = f"{flag} {text!r} is not a date: use YYYY-MM-DD, e.g. 2024-01-31"
        raise UsageError(msg) from exc


def parse_xget_day(text: str, flag: str) -> date:
    """xget's DDMMYYYY."""
    try:
        return datetime.strptime(text.strip(), "%d%m%Y").date()
    except ValueError as exc:
        msg = f"{flag} {text!r} is not a date: xget dates are DDMMYYYY, e.g. 31012024"
        raise UsageError(msg) from exc


def read_list_file(path: Path, *, comma_lists: bool = False) -> list[str]:
    """IDs or labels from a plain, CSV or TSV file: first column; BOM, CRLF, blank lines and
    a header row tolerated; ``#`` starts a comment line.  With ``comma_lists`` (xget's
    session files) every comma-separated value on a line counts."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        msg = f"cannot read list file {path}: {exc.strerror}"
        raise UsageError(msg) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        msg = f"list file {path} is not UTF-8 text"
        raise UsageError(msg) from exc
    lines = text.splitlines()
    sample = "\n".join(lines[:5])
    delimiter = "\t" if "\t" in sample else "," if "," in sample else None
    values: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if comma_lists:
            cells = [c.strip() for c in line.split(",") if c.strip()]
        elif delimiter:
            row = next(csv.reader(io.StringIO(line), delimiter=delimiter), [""])
            cells = [row[0].strip() if row else ""]
        else:
            cells = [line.strip()]
        for cell in cells:
            if not values and cell.lower() in HEADER_WORDS:
                continue  # a header row
            _check_cell(cell, path, number)
            values.append(cell)
    if not values:
        msg = f"list file {path} names nothing"
        raise UsageError(msg)
    return values


def _check_cell(cell: str, path: Path, number: int) -> None:
    if not cell:
        msg = f"{path} line {number}: the first column is empty"
        raise UsageError(msg)
    if _BAD_ID.search(cell):
        msg = (
            f"{path} line {number}: {cell!r} is not an XNAT ID or label (it contains "
            "a space, slash or control character)"
        )
        raise UsageError(msg)


def expand(values: list[str] | None, flag: str = "") -> tuple[str, ...]:
    """Flag values, with ``@FILE`` replaced by the file's entries and commas split.

    A value that names nothing (``-s ""``, as a script's unset variable gives) is a
    UsageError: taken as no value, it would lift the constraint and select everything."""
    out: list[str] = []
    for value in values or []:
        if value.startswith("@"):
            out.extend(read_list_file(Path(value[1:])))
            continue
        items = [v.strip() for v in value.split(",") if v.strip()]
        if not items:
            raise _names_nothing(flag, value, "an ID, label or pattern")
        out.extend(items)
    return tuple(dict.fromkeys(out))


def labelled(value: str | None, flag: str) -> str:
    """A label flag's value, "" when it was not given.  An empty value given is refused: a
    script's unset variable would otherwise mean "from the data", "the project itself" or
    "no routing"."""
    if value is None:
        return ""
    if not value.strip():
        raise _names_nothing(flag, value, "a label")
    return value


def _names_nothing(flag: str, value: str, wanted: str) -> UsageError:
    named = f"{flag} " if flag else ""
    return UsageError(f"{named}{value!r} names nothing: give {wanted}, or leave the flag out")


def parse_choice(answer: str, projects: list[str]) -> list[str] | str:
    """The chooser's answer as project IDs, or an error message to show before asking
    again.  Numbers and IDs separated by spaces or commas, ranges (``2-5``) and ``all``."""
    tokens = [t for t in answer.replace(",", " ").split() if t]
    if not tokens:
        return "type numbers (1 3, 1,3 or 2-5), project IDs, or all"
    if [t.lower() for t in tokens] == ["all"]:
        return list(projects)
    chosen: list[str] = []
    for token in tokens:
        first, dash, last = token.partition("-")
        if token in projects:
            picks = [token]
        elif token.isdigit() or (dash and first.isdigit() and last.isdigit()):
            low, high = (int(first), int(last)) if dash else (int(token), int(token))
            if low > high or not (low >= 1 and high <= len(projects)):
                return f"{token} is not within 1-{len(projects)}, try again"
            picks = projects[low - 1 : high]
        else:
            return f"the project {token} is not in the list, try again"
        chosen.extend(p for p in picks if p not in chosen)
    return chosen


def menu(projects: list[str]) -> str:
    """The seed tool's numbered menu: ``N) ID`` in 20-character columns, five per row."""
    cells = [f"{i}) {p}".ljust(20) for i, p in enumerate(projects, start=1)]
    rows = [" ".join(cells[i : i + 5]).rstrip() for i in range(0, len(cells), 5)]
    return "\n".join(rows)


def flags_given(
    args: argparse.Namespace, flags: Iterable[tuple[str, str]], *, on_off: Collection[str] = ()
) -> list[str]:
    """The flags of ``flags`` (``(dest, as written)`` pairs) that the command line gave.
    Not given reads as None (an option, a list) or False (a switch); for the ``--X/--no-X``
    pairs named in ``on_off``, whose not-given is None, False is an answer too."""
    given = []
    for dest, flag in flags:
        value = getattr(args, dest, None)
        if value is None or (value is False and dest not in on_off):
            continue
        given.append(flag)
    return given
