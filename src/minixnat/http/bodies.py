"""Request bodies streamed to disk: a raw body, or the file parts of a multipart form.

Uploads never sit whole in memory: each part goes to a temporary file under the archive
root's ``tmp/`` (the same file system as the archive, so storing it is a rename) while its
size and MD5 are computed.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

from minixnat.http.messages import HttpError, Request, RequestCut

NO_DATA = (
    "You tried to PUT or POST to this service, but didn't provide any data: send the file "
    "as the request body (inbody=true) or as a multipart/form-data file part."
)


@dataclass
class Upload:
    """One received file: where it is on disk, the name the client gave, size and MD5."""

    path: Path
    filename: str
    content_type: str
    size: int = 0
    md5: str = ""


@dataclass
class Body:
    uploads: list[Upload] = field(default_factory=list)
    form: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        for upload in self.uploads:
            upload.path.unlink(missing_ok=True)


class _Sink:
    """Writes one upload to its temporary file, hashing as it goes."""

    def __init__(self, tmp_dir: Path, filename: str, content_type: str) -> None:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        self.upload = Upload(tmp_dir / f"upload-{secrets.token_hex(8)}", filename, content_type)
        self.file: IO[bytes] = open(self.upload.path, "wb")  # noqa: SIM115 (closed in close())
        self.digest = hashlib.md5()

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.digest.update(data)
        self.upload.size += len(data)

    def close(self) -> Upload:
        self.file.close()
        self.upload.md5 = self.digest.hexdigest()
        return self.upload


async def receive(request: Request, tmp_dir: Path) -> Body:
    """Read the whole body to disk.  A body with no data gives an empty ``uploads``."""
    if request.spooled is not None:  # received already, by the pages' upload form
        body, request.spooled = request.spooled, None
        return body
    content_type = request.headers.get("content-type", "")
    ctype, params = parse_options_header(content_type)
    if ctype == b"multipart/form-data":
        if request.flag("inbody"):
            raise HttpError(406, "inbody=true cannot be combined with a multipart body.")
        return await _multipart(request, tmp_dir, params.get(b"boundary", b""))
    sink = _Sink(tmp_dir, "", ctype.decode("latin-1"))
    body = Body()
    try:
        async for chunk in request.body_chunks():
            sink.write(chunk)
    except BaseException:
        sink.close()
        sink.upload.path.unlink(missing_ok=True)
        raise
    upload = sink.close()
    if upload.size == 0:
        upload.path.unlink(missing_ok=True)
    else:
        body.uploads.append(upload)
    return body


async def _multipart(request: Request, tmp_dir: Path, boundary: bytes) -> Body:
    if not boundary:
        raise HttpError(400, "The multipart body has no boundary.")
    body = Body()
    state: dict[str, object] = {}
    header_name: list[bytes] = []
    header_value: list[bytes] = []
    headers: dict[bytes, bytes] = {}
    field_bytes: list[bytes] = []

    def on_part_begin() -> None:
        headers.clear()
        field_bytes.clear()
        state.pop("sink", None)
        state.pop("field", None)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.append(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.append(data[start:end])

    def on_header_end() -> None:
        headers[b"".join(header_name).lower()] = b"".join(header_value)
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        filename = disposition.get(b"filename")
        if filename is not None:
            ctype = headers.get(b"content-type", b"application/octet-stream").decode("latin-1")
            state["sink"] = _Sink(tmp_dir, filename.decode("utf-8", "replace"), ctype)
        else:
            state["field"] = disposition.get(b"name", b"").decode("utf-8", "replace")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        sink = state.get("sink")
        if isinstance(sink, _Sink):
            sink.write(data[start:end])
        else:
            field_bytes.append(data[start:end])
            if sum(len(b) for b in field_bytes) > 1024 * 1024:
                raise HttpError(413, "A multipart form field is larger than 1 MiB.")

    def on_part_end() -> None:
        sink = state.pop("sink", None)
        if isinstance(sink, _Sink):
            body.uploads.append(sink.close())
        name = state.pop("field", None)
        if isinstance(name, str) and name:
            body.form[name] = b"".join(field_bytes).decode("utf-8", "replace")

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
        },
    )
    try:
        async for chunk in request.body_chunks():
            parser.write(chunk)
        parser.finalize()
    except HttpError:
        body.discard()
        raise
    except RequestCut:  # not a malformed body: an unfinished one, and nobody to answer
        body.discard()
        sink = state.get("sink")
        if isinstance(sink, _Sink):
            sink.close()
            sink.upload.path.unlink(missing_ok=True)
        raise
    except Exception as exc:
        body.discard()
        sink = state.get("sink")
        if isinstance(sink, _Sink):
            sink.close()
            sink.upload.path.unlink(missing_ok=True)
        raise HttpError(400, f"The multipart body could not be parsed: {exc}") from exc
    return body
