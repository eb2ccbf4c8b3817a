"""XNAT's listing tables: the ``ResultSet`` envelope in json, csv, xml and html.

Every cell is a string (XNAT stringifies through ``XFTTable``; nulls become ``""``).  Table
properties follow ``Result`` as ``, "key": "value"``, exactly as XNAT serialises them.
``columns=`` picks columns but ``URI`` is always appended; ``sortBy``/``sortOrder`` sort;
filters and paging live in :func:`apply_query`.
"""

from __future__ import annotations

import csv
import fnmatch
import html
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from xml.sax.saxutils import escape

from minixnat.http.messages import HttpError, Request, Response

Row = dict[str, str]

# Query parameters that are never filters.
RESERVED = {
    "format",
    "columns",
    "sortby",
    "sortorder",
    "limit",
    "offset",
    "xsitype",
    "fields",
    "accept-not-found",
    "allDataOverride".lower(),
    "restrict",
    "all",
    "recursive",
    "locator",
    "structure",
    "projectincludedinpath",
    "subjectincludedinpath",
    "compression",
    "index",
    "file_format",
    "file_content",
    "concealhiddenfields",
    "includehistory",
    "csrf",
    "req_format",
    "event_reason",
    "event_type",
    "event_action",
    "event_comment",
}


@dataclass
class Table:
    columns: list[str]
    rows: list[Row]
    title: str | None = None
    total_records: bool = True
    fixed_columns: bool = False
    column_props: list[dict[str, str]] | None = None
    extra_props: dict[str, str] = field(default_factory=dict)
    # The listed objects' other fields, ``{row _key: {path: value}}``, loaded only when asked.
    fields: Callable[[], dict[str, dict[str, str]]] | None = None
    # Given with any ``columns=``, as XNAT's query builder always selects the row's key
    # (and ``kept_columns`` too: an experiment listing filtered by type keeps its type).
    key_column: str | None = None
    kept_columns: tuple[str, ...] = ()


def project_columns(table: Table, request: Request) -> Table:
    """Apply ``columns=`` (unless the listing's columns are fixed); always keep ``URI``.

    A name that is no column of the listing is looked up among the objects' other fields
    (``Table.fields``, keyed by each row's hidden ``_key``), as XNAT answers any field path
    of the listed datatype.  A field repeated in an object (provenance steps) gives one row
    per occurrence, as XNAT's joins do.
    """
    wanted = request.param("columns")
    if table.fixed_columns or not wanted or wanted.upper() == "DEFAULT":
        rows = [{c: r.get(c, "") for c in table.columns} for r in table.rows]
        return replace(table, rows=rows)
    names = [c.strip() for c in wanted.split(",") if c.strip()]
    known = _known_columns(table)
    chosen: list[tuple[str, str, bool]] = []  # (output name, row key or field key, is_field)
    for name in names:
        key = known.get(name.lower())
        out_name = key
        also_plain = False
        if key is None and "/" in name:
            # An xpath such as xnat:subjectAssessorData/subject_id: XNAT names the output
            # column after the lower-cased xpath.  pyxnat's Experiment() then reads the
            # plain column (``subject_ID``) from the same rows, so that is given too.
            key = known.get(name.rsplit("/", 1)[1].lower())
            out_name = name.lower()
            also_plain = True
        taken = {c for c, _, _ in chosen}
        if key is None and table.fields is not None:
            out_name = name.lower() if "/" in name else name
            if out_name not in taken:
                chosen.append((out_name, field_key(name), True))
            continue
        if key and out_name and key != "URI" and out_name not in taken:
            chosen.append((out_name, key, False))
            if also_plain and key not in taken:
                chosen.append((key, key, False))
    for kept in (table.key_column, *table.kept_columns):
        if kept and kept not in {c for c, _, _ in chosen}:
            chosen.append((kept, kept, False))
    chosen.append(("URI", "URI", False))
    fields = table.fields() if table.fields and any(f for _, _, f in chosen) else {}
    rows = []
    for r in table.rows:
        values = {
            out: _occurrences(fields.get(r.get("_key", ""), {}), key)
            for out, key, is_field in chosen
            if is_field
        }
        positions = sorted({p for found in values.values() for p in found}) or [1]
        for pos in positions:
            rows.append(
                {
                    out: values[out].get(pos, "") if is_field else r.get(key, "")
                    for out, key, is_field in chosen
                }
            )
    return replace(table, columns=[c for c, _, _ in chosen], rows=rows)


_POSITION = re.compile(r"\[(\d+)\]")
# ``[@xsi:type=xnat:demographicData]``: names the type of a step, never which element.
TYPE_PREDICATE = re.compile(r"\[@xsi:type=[^\]]*\]")


def below_datatype(name: str) -> str | None:
    """The path below a datatype prefix (``xnat:mrSessionData/age`` → ``age``), or None."""
    head, sep, rest = name.partition("/")
    return rest if sep and ":" in head and rest else None


def field_key(name: str) -> str:
    """How a column name finds a stored field path: below the datatype, lower case, without
    positions or type predicates (``xnat:reconstructedImageData/provenance/processStep/
    program`` → ``provenance/processstep/program``, ``xnat:subjectData/demographics[@xsi:
    type=xnat:demographicData]/age`` → ``demographics/age``)."""
    return TYPE_PREDICATE.sub("", _POSITION.sub("", below_datatype(name) or name)).lower()


def _occurrences(stored: dict[str, str], key: str) -> dict[int, str]:
    """The values of one field in one object, by position (1 when not repeated)."""
    found = {}
    for path, value in stored.items():
        if field_key(path) == key:
            position = _POSITION.search(path)
            found[int(position.group(1)) if position else 1] = value
    return found


def _known_columns(table: Table) -> dict[str, str]:
    known = {c.lower(): c for c in table.columns}
    if table.rows:
        for key in table.rows[0]:
            known.setdefault(key.lower(), key)
    return known


def _parse_date(value: str) -> date | None:
    for fmt in ("%m/%d/%Y", "%Y%m%d", "%Y-%m-%d"):
        try:
            return datetime.strptime(value.strip(), fmt).date()
        except ValueError:
            continue
    return None


def _date_matches(cell: str, spec: str) -> bool:
    cell_date = _parse_date(cell[:10]) if cell else None
    for option in spec.split(","):
        option = option.strip()
        # XNAT cuts a date filter at its first '-' to form a range (so ISO dates don't work
        # as single values there); YYYY-MM-DD alone is accepted here as a convenience.
        if _parse_date(option) is not None and "-" in option and option.count("-") == 2:
            if cell_date == _parse_date(option):
                return True
            continue
        if "-" in option:
            low_text, high_text = option.split("-", 1)
            low = _parse_date(low_text) if low_text else None
            high = _parse_date(high_text) if high_text else None
            if (low_text and low is None) or (high_text and high is None):
                raise HttpError(400, f"Invalid date range {option!r}: use MM/DD/YYYY-MM/DD/YYYY")
            if cell_date is None:
                continue
            if (low is None or cell_date >= low) and (high is None or cell_date <= high):
                return True
        else:
            wanted = _parse_date(option)
            if wanted is None:
                raise HttpError(400, f"Invalid date {option!r}: use MM/DD/YYYY or YYYYMMDD")
            if cell_date == wanted:
                return True
    return False


def _text_matches(cell: str, spec: str) -> bool:
    for option in spec.split(","):
        pattern = option.strip().replace("%", "*")
        if "*" in pattern:
            if fnmatch.fnmatchcase(cell.lower(), pattern.lower()):
                return True
        elif cell.lower() == pattern.lower():
            return True
    return False


def apply_query(
    table: Table, request: Request, *, filters: bool = True, paging: bool = True
) -> Table:
    """Filters (any column named as a parameter), sorting and paging, as QueryOrganizer."""
    rows = table.rows
    if filters:
        by_lower = _known_columns(table)
        for key, value in request.query.items():
            column = by_lower.get(key.lower())
            if column is None or key.lower() in RESERVED or column == "URI":
                continue
            if "date" in column.lower():
                rows = [r for r in rows if _date_matches(r.get(column, ""), value)]
            else:
                rows = [r for r in rows if _text_matches(r.get(column, ""), value)]
    sort_by = request.param("sortBy")
    if sort_by:
        keys = [k for k in (s.strip() for s in sort_by.split(",")) if k]
        reverse = request.param("sortOrder").upper() == "DESC"
        rows = sorted(rows, key=lambda r: tuple(r.get(k, "") for k in keys), reverse=reverse)
    total = table.total_records
    if paging and (request.param("limit") or request.param("offset")):
        try:
            offset = int(request.param("offset") or 0)
            limit_text = request.param("limit") or "*"
            limit = None if limit_text == "*" else int(limit_text)
        except ValueError as exc:
            raise HttpError(400, "limit and offset must be integers (or '*' for limit)") from exc
        rows = rows[offset:] if limit is None else rows[offset : offset + limit]
        total = False  # XNAT drops totalRecords from paged listings
    return replace(table, rows=rows, total_records=total)


def _json_body(table: Table) -> str:
    result = json.dumps(table.rows, separators=(",", ":"), ensure_ascii=False)
    parts = ['{"ResultSet":{']
    if table.column_props is not None:
        parts.append('"Columns":' + json.dumps(table.column_props, separators=(",", ":")) + ",")
    parts.append('"Result":' + result)
    props: dict[str, str] = {}
    if table.total_records:
        props["totalRecords"] = str(len(table.rows))
    if table.title:
        props["title"] = table.title
    props.update(table.extra_props)
    for key, value in props.items():
        parts.append(f", {json.dumps(key)}: {json.dumps(value)}")
    parts.append("}}")
    return "".join(parts)


def _csv_body(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow([row.get(c, "") for c in table.columns])
    return out.getvalue()


def _xml_body(table: Table) -> str:
    attrs = ""
    if table.total_records:
        attrs += f' totalRecords="{len(table.rows)}"'
    if table.title:
        attrs += f' title="{escape(table.title)}"'
    cols = "".join(f"<column>{escape(c)}</column>" for c in table.columns)
    rows = "".join(
        "<row>"
        + "".join(f"<cell>{escape(r.get(c, ''))}</cell>" for c in table.columns)
        + "</row>\n"
        for r in table.rows
    )
    return (
        f"<ResultSet{attrs}><results><columns>{cols}</columns>\n<rows>{rows}</rows>"
        "</results></ResultSet>"
    )


def _html_body(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(r.get(c, ''))}</td>" for c in table.columns) + "</tr>\n"
        for r in table.rows
    )
    # A listing rendered as HTML is data, not an error page: it must not start with <html>
    # (clients treat such bodies as errors), so it is a bare table fragment.
    return (
        f'<table class="resultset"><thead><tr>{head}</tr></thead>\n<tbody>{body}</tbody></table>\n'
    )


def render(table: Table, request: Request, *, default: str = "json") -> Response:
    fmt = (request.param("format") or default).lower()
    if fmt == "json":
        return Response(200, _json_body(table).encode(), "application/json;charset=UTF-8")
    if fmt == "csv":
        return Response(200, _csv_body(table).encode(), "text/csv;charset=UTF-8")
    if fmt == "xml":
        return Response(200, _xml_body(table).encode(), "text/xml;charset=UTF-8")
    if fmt in ("html", "xlist"):
        return Response(200, _html_body(table).encode(), "text/html;charset=UTF-8")
    raise HttpError(400, f"Unsupported format {fmt!r} for a listing: use json, csv, xml or html")
