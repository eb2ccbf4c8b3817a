"""The Python API for subjects from a spreadsheet: :func:`upload_subjects` creates or
updates the subjects a CSV lists (their demographics and custom fields), one result per data
row; a bad row fails alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xnat_downloader import aio
from xnat_downloader.api.connection import Connection
from xnat_downloader.api.upload import require_project
from xnat_downloader.errors import ConnectionFailed, NotFound, ServerError, UsageError
from xnat_downloader.http.client import XnatClient
from xnat_downloader.plan.upload import SubjectRow, parse_subjects
from xnat_downloader.xnat import paths


@dataclass
class SubjectResult:
    line: int
    label: str
    status: str  # created | updated | failed
    message: str = ""


def subject_params(demographics: dict[str, str], fields: dict[str, str]) -> dict[str, str]:
    params = {"xsiType": "xnat:subjectData"}
    for key, value in demographics.items():
        params[f"xnat:subjectData/demographics[@xsi:type=xnat:demographicData]/{key}"] = value
    for name, value in fields.items():
        params[f"xnat:subjectData/fields/field[name={name}]/field"] = value
    return params


async def _subjects(conn: Connection, csv_path: Path, project: str) -> list[SubjectResult]:
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {csv_path}: {exc}") from exc
    rows, errors = parse_subjects(text)
    results = [SubjectResult(e.line, e.label, "failed", e.message) for e in errors]
    async with conn.client() as xs:
        await require_project(xs, project)
        results += await put_subjects(xs, project, rows)
    return sorted(results, key=lambda r: r.line)


async def put_subjects(
    xs: XnatClient, project: str, rows: Sequence[SubjectRow]
) -> list[SubjectResult]:
    """Create or update each row's subject, one after another; one result per row.

    A row the server refuses fails alone.  A server that stops answering fails the row
    whose request spent its tries, and every row after it is failed unsent (each would
    spend the same tries on a server that is gone); the PUTs are create-or-update, so the
    same command run again finishes the rest."""
    results: list[SubjectResult] = []
    for index, row in enumerate(rows):
        try:
            status, _ = await xs.send(
                "PUT", paths.owner(project, row.label),
                params=subject_params(row.demographics, row.fields),
                what=f"subject {row.label} (line {row.line})",
            )  # fmt: skip
        except (ServerError, NotFound) as exc:
            results.append(SubjectResult(row.line, row.label, "failed", str(exc)))
            continue
        except ConnectionFailed as exc:
            results.append(SubjectResult(row.line, row.label, "failed", str(exc)))
            unsent = "not sent: the server stopped answering; run the same command again"
            results += [SubjectResult(r.line, r.label, "failed", unsent) for r in rows[index + 1 :]]
            break
        results.append(
            SubjectResult(row.line, row.label, "created" if status == 201 else "updated")
        )
    return results


def upload_subjects(conn: Connection, csv_path: str | Path, project: str) -> list[SubjectResult]:
    """Create or update the subjects a CSV lists; one result per data row, bad rows failed."""
    return aio.run(_subjects(conn, Path(csv_path), project))


__all__ = ["SubjectResult", "put_subjects", "subject_params", "upload_subjects"]
