"""File bodies: single files (with Range) and zip/tar/tar.gz archives streamed from disk.

Archives are built on the fly in bounded memory: each member is read in 1 MiB chunks and
the encoder's output is drained after every chunk, so serving a 1 GiB zip needs a few MiB.
Member paths follow XNAT's ``structure=`` rules (default, simplified, legacy, improved) and
the ``projectIncludedInPath`` / ``subjectIncludedInPath`` switches.
"""

from __future__ import annotations

import os
import re
import tarfile
import zipfile
import zlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from email.utils import formatdate
from functools import lru_cache
from pathlib import Path
from posixpath import basename
from stat import S_ISREG
from typing import Any

from minixnat.http.messages import FileSlice, HttpError, Request, Response, StreamResponse
from minixnat.rest.resolve import Node, Target
from minixnat.store import FileRow, Resource, Store

CHUNK = 1024 * 1024
CONTENT_TYPES = {
    "bmp": "image/bmp",
    "gif": "image/gif",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "svg": "image/svg+xml",
    "tiff": "image/tiff",
    "pdf": "application/pdf",
    "html": "text/html",
    "txt": "text/plain",
    "xml": "text/xml",
}
ARCHIVE_FORMATS = {
    "zip": "application/zip",
    "tar": "application/x-tar",
    "tar.gz": "application/x-gtar",
    "tgz": "application/x-gtar",
}


@dataclass(frozen=True)
class Member:
    """One file going into an archive: where it comes from and its name inside."""

    source: Path
    name: str
    size: int
    mtime: float


def _clean_type(text: str) -> str:
    return re.sub(r"\W", "_", text)


def member_name(
    node: Node,
    res: Resource,
    f: FileRow,
    *,
    structure: str,
    include_project: bool,
    include_subject: bool,
    tar: bool = False,
) -> str:
    """The path of a file inside an archive, per XNAT's ``structure`` rules."""
    rel = f.path
    if node.kind == "project":
        return f"{node.project.id}/resources/{res.label}/files/{rel}"
    if node.kind == "subject":
        assert node.subject
        return f"{node.subject.label}/resources/{res.label}/files/{rel}"
    assert node.experiment
    session = node.experiment.label
    prefix = ""
    if node.kind != "experiment" or structure != "improved":
        if include_subject and node.subject:
            prefix = f"{node.subject.label}/"
        if include_project:
            prefix = f"{node.project.id}/{prefix}"
    if structure == "legacy":
        folder = res.directory.split("/arc001/", 1)[-1]
        return f"{prefix}{folder}/{rel}"
    if structure == "improved":
        if node.scan is not None:
            part = (
                node.scan.scan_id if tar else f"{node.scan.scan_id}_{_clean_type(node.scan.type)}"
            )
            return f"{prefix}scans/{part}/{res.label}/{rel}"
        if node.recon is not None:
            return f"{prefix}reconstructions/{node.recon.recon_id}/{res.label}/{rel}"
        if node.assessor is not None:
            return f"{prefix}assessors/{node.assessor.label}/{res.label}/{rel}"
        return f"{prefix}resources/{res.label}/{rel}"
    simplified = structure == "simplified"
    if node.scan is not None:
        if simplified:
            return f"{prefix}{session}/scans/{node.scan.scan_id}/{res.label}/{rel}"
        scan = f"{node.scan.scan_id}-{_clean_type(node.scan.type)}"
        return f"{prefix}{session}/scans/{scan}/resources/{res.label}/files/{rel}"
    if node.recon is not None:
        if simplified:
            return f"{prefix}{session}/reconstructions/{node.recon.recon_id}/{res.label}/{rel}"
        return (
            f"{prefix}{session}/reconstructions/{node.recon.recon_id}/out/resources/"
            f"{res.label}/files/{rel}"
        )
    if node.assessor is not None:
        if simplified:
            return f"{prefix}{session}/assessors/{node.assessor.label}/{res.label}/{rel}"
        return (
            f"{prefix}{session}/assessors/{node.assessor.id}/out/resources/{res.label}/files/{rel}"
        )
    if simplified:
        return f"{prefix}{session}/{res.label}/{rel}"
    return f"{prefix}{session}/resources/{res.label}/files/{rel}"


def archive_name(target: Target) -> str:
    if target.experiment is not None:
        return target.experiment.label
    if target.subject is not None:
        return target.subject.label
    if target.project is not None:
        return target.project.id
    return "download"


def find_single_file(store: Store, target: Target) -> tuple[Node, Resource, FileRow]:
    assert target.file_path is not None
    wanted = target.file_path
    pattern = re.compile(re.escape(wanted).replace(r"\*", ".*")) if "*" in wanted else None
    matches = []
    for node, res in target.resources:
        if pattern is None:  # the common case: one indexed lookup, not a listing
            found = store.lookup_file(res.pk, wanted)
            matches += [(node, res, found)] if found is not None else []
            continue
        for f in store.list_files(res.pk):
            if f.path == wanted or pattern.fullmatch(f.path):
                matches.append((node, res, f))
    if not matches:
        raise HttpError(404, "Unable to find file.")
    if len(matches) > 1:
        raise HttpError(400, "More than one file matches; ask for format=zip to get them all.")
    return matches[0]


@lru_cache(maxsize=4096)
def _http_date(ts: float) -> str:
    """An HTTP date (files of one import share their modification times)."""
    return formatdate(ts, usegmt=True)


def _content_type(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return CONTENT_TYPES.get(ext, "application/octet-stream")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``(start, end)`` inclusive for a single satisfiable byte range, or None to send all.

    Raises HttpError(416) for a syntactically valid but unsatisfiable range.
    """
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not match:
        return None  # multi-range or garbage: ignore, as many servers do, and send 200
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        length = int(last)
        if length == 0:
            raise HttpError(
                416, "Requested range not satisfiable", [("Content-Range", f"bytes */{size}")]
            )
        return max(0, size - length), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        raise HttpError(
            416, "Requested range not satisfiable", [("Content-Range", f"bytes */{size}")]
        )
    return start, min(end, size - 1)


def serve_file(
    store: Store, target: Target, request: Request, *, allow_range: bool
) -> Response | StreamResponse:
    _node, res, f = find_single_file(store, target)
    path = store.file_location(res, f.path)
    try:
        stat = os.stat(path)
    except OSError:
        stat = None
    if stat is None or not S_ISREG(stat.st_mode):
        raise HttpError(404, "Unable to find file: the catalog lists it but it is not on disk.")
    fmt = request.param("format").lower()
    if fmt in ARCHIVE_FORMATS and not f.path.lower().endswith("." + fmt):
        members = [Member(Path(path), basename(f.path), f.size, stat.st_mtime)]
        return stream_archive(members, fmt, basename(f.path), request)
    name = basename(f.path)
    headers = [
        ("Content-Disposition", f'attachment; filename="{name}";'),
        ("Cache-Control", "must-revalidate"),
        ("Last-Modified", _http_date(stat.st_mtime)),
        ("ETag", f'"{f.md5}"'),
    ]
    size = stat.st_size
    rng = None
    if allow_range:
        headers.append(("Accept-Ranges", "bytes"))
        if "range" in request.headers:
            if_range = request.headers.get("if-range", "")
            if not if_range or if_range.strip() == f'"{f.md5}"':
                rng = parse_range(request.headers["range"], size)
    if rng is None:
        return StreamResponse.of_file(FileSlice(path, 0, size), 200, _content_type(name), headers)
    start, end = rng
    headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
    body = FileSlice(path, start, end - start + 1)
    return StreamResponse.of_file(body, 206, _content_type(name), headers)


class _Sink:
    """A write-only file object that collects what an encoder writes, to be drained."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        if data:
            self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        return None

    def drain(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


async def zip_stream(members: Iterable[Member], level: int) -> AsyncIterator[bytes]:
    sink = _Sink()
    method = zipfile.ZIP_STORED if level == 0 else zipfile.ZIP_DEFLATED
    # _Sink has write() but no tell()/seek(): zipfile then writes data descriptors, which is
    # what lets it stream.  The stubs do not describe that write-only protocol.
    writer: Any = sink
    with zipfile.ZipFile(
        writer,
        "w",
        compression=method,
        allowZip64=True,
        compresslevel=None if level == 0 else level,
    ) as archive:
        for member in members:
            info = zipfile.ZipInfo.from_file(member.source, member.name)
            info.compress_type = method
            with (
                archive.open(info, "w", force_zip64=member.size > 0x7FFFFFFF) as entry,
                open(member.source, "rb") as handle,
            ):
                while data := handle.read(CHUNK):
                    entry.write(data)
                    out = sink.drain()
                    if out:
                        yield out
            out = sink.drain()
            if out:
                yield out
    out = sink.drain()
    if out:
        yield out


async def tar_stream(members: Iterable[Member], gz: bool) -> AsyncIterator[bytes]:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31) if gz else None

    def encode(data: bytes) -> bytes:
        return compressor.compress(data) if compressor else data

    for member in members:
        info = tarfile.TarInfo(member.name)
        info.size = member.size
        info.mtime = int(member.mtime)
        info.mode = 0o644
        yield encode(info.tobuf(format=tarfile.PAX_FORMAT))
        written = 0
        with open(member.source, "rb") as handle:
            while data := handle.read(CHUNK):
                written += len(data)
                out = encode(data)
                if out:
                    yield out
        if written != member.size:
            raise OSError(f"{member.source} changed size while being archived")
        padding = (-member.size) % tarfile.BLOCKSIZE
        if padding:
            yield encode(b"\0" * padding)
    tail = encode(b"\0" * (tarfile.BLOCKSIZE * 2))
    if compressor:
        tail += compressor.flush()
    yield tail


def stream_archive(members: list[Member], fmt: str, name: str, request: Request) -> StreamResponse:
    if not members:
        raise HttpError(404, "No matching files to archive.")
    try:
        level = int(request.param("compression") or 6)
    except ValueError as exc:
        raise HttpError(400, "compression must be an integer from 0 to 9") from exc
    if not 0 <= level <= 9:
        raise HttpError(400, "compression must be an integer from 0 to 9")
    if fmt == "zip":
        body = zip_stream(members, level)
        suffix = "zip"
    else:
        body = tar_stream(members, gz=fmt in ("tar.gz", "tgz"))
        suffix = "tar" if fmt == "tar" else "tar.gz"
    headers = [("Content-Disposition", f'attachment; filename="{name}.{suffix}";')]
    return StreamResponse(body, 200, ARCHIVE_FORMATS[fmt], headers, None)


def archive_members(
    store: Store, files: list[tuple[Node, Resource, FileRow]], request: Request, fmt: str
) -> list[Member]:
    structure = request.param("structure").lower()
    include_project = request.flag("projectIncludedInPath")
    include_subject = request.flag("subjectIncludedInPath")
    members = []
    seen: set[str] = set()
    for node, res, f in files:
        name = member_name(
            node,
            res,
            f,
            structure=structure,
            include_project=include_project,
            include_subject=include_subject,
            tar=fmt != "zip",
        )
        if name in seen:
            continue
        seen.add(name)
        source = store.file_path(res, f.path)
        try:
            mtime = os.stat(source).st_mtime
        except FileNotFoundError:
            continue
        members.append(Member(source, name, f.size, mtime))
    return members
