"""The streaming zip reader against zips as Python and Java-style writers make them, and the
per-resource mode choice."""

from __future__ import annotations

import asyncio
import io
import random
import struct
import zipfile
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xnat_downloader.transfer.jobs import Job
from xnat_downloader.transfer.modes import Mode, choose, member_path, split_uri
from xnat_downloader.transfer.unzip import (
    Source,
    ZipStreamError,
    member_data,
    read_header,
    skip_member,
)


class _Unseekable(io.RawIOBase):
    """What a streaming server writes to: zipfile then uses data descriptors."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.data += bytes(b)
        return len(b)


def make_zip(members: dict[str, bytes], method: int, *, streamed: bool) -> bytes:
    if streamed:
        sink = _Unseekable()
        target: Any = sink
    else:
        target = io.BytesIO()
    with zipfile.ZipFile(target, "w", compression=method) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            if streamed:
                with zf.open(info, "w") as entry:
                    entry.write(data)
            else:
                zf.writestr(info, data)
    return bytes(sink.data) if streamed else target.getvalue()


def read_all(body: bytes, sizes: dict[str, int], chunk: int = 7) -> dict[str, bytes]:
    """Feed ``body`` in small pieces, as a network would."""

    async def go() -> dict[str, bytes]:
        pos = 0

        async def read_some(n: int) -> bytes:
            nonlocal pos
            take = min(n, chunk, len(body) - pos)
            out = body[pos : pos + take]
            pos += take
            return out

        src = Source(read_some)
        out: dict[str, bytes] = {}
        while (header := await read_header(src)) is not None:
            data = bytearray()
            async for piece in member_data(src, header, sizes.get(header.name)):
                data += piece
            out[header.name] = bytes(data)
        return out

    return asyncio.run(go())


contents = st.dictionaries(
    st.from_regex(r"[a-z]{1,8}(/[a-z0-9.]{1,8}){0,2}", fullmatch=True),
    st.binary(max_size=3000) | st.integers(0, 5000).map(lambda n: b"x" * n),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(contents, st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]), st.booleans())
def test_reads_back_every_member(members: dict[str, bytes], method: int, streamed: bool) -> None:
    body = make_zip(members, method, streamed=streamed)
    sizes = {k: len(v) for k, v in members.items()}
    assert read_all(body, sizes) == members


def java_style(members: dict[str, bytes]) -> bytes:
    """Deflated members with a data descriptor that has no signature (allowed by the spec;
    some writers do it), and UTF-8 names."""
    out = bytearray()
    for name, data in members.items():
        raw = name.encode()
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0x808, 8, 0, 0, 0, 0, 0, len(raw), 0)
        out += raw
        comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        body = comp.compress(data) + comp.flush()
        out += body
        out += struct.pack("<III", zlib.crc32(data), len(body), len(data))
    out += b"PK\x01\x02" + b"\0" * 42  # the central directory: where reading stops
    return bytes(out)


def test_descriptor_without_signature_and_utf8_names() -> None:
    members = {"séance/1.dcm": b"a" * 1000, "b.dcm": bytes(range(256)) * 10}
    assert read_all(java_style(members), {}) == members


def test_corruption_and_truncation_are_errors() -> None:
    members = {"a": random.Random(1).randbytes(5000)}
    body = bytearray(make_zip(members, zipfile.ZIP_STORED, streamed=False))
    body[100] ^= 0xFF
    with pytest.raises(ZipStreamError, match="CRC"):
        read_all(bytes(body), {})
    good = make_zip(members, zipfile.ZIP_DEFLATED, streamed=True)
    with pytest.raises(ZipStreamError, match="ends"):
        read_all(good[:1000], {})
    with pytest.raises(ZipStreamError, match="expected a zip member"):
        read_all(b"<html><body>Login</body></html>", {})


def test_stored_streamed_member_needs_a_size() -> None:
    body = make_zip({"a": b"12345"}, zipfile.ZIP_STORED, streamed=True)
    with pytest.raises(ZipStreamError, match="cannot tell where"):
        read_all(body, {})


def test_encrypted_members_are_refused() -> None:
    body = bytearray(make_zip({"a": b"x"}, zipfile.ZIP_STORED, streamed=False))
    body[6] |= 0x1  # the general-purpose flag's "encrypted" bit

    async def go() -> None:
        data = bytes(body)

        async def read_some(n: int) -> bytes:
            nonlocal data
            out, data = data[:n], data[n:]
            return out

        header = await read_header(Source(read_some))
        assert header is not None

    with pytest.raises(ZipStreamError, match="encrypted"):
        asyncio.run(go())


def test_skip_member_leaves_the_stream_at_the_next_header() -> None:
    members = {"skip-me": b"s" * 4000, "keep": b"k" * 10}
    body = make_zip(members, zipfile.ZIP_DEFLATED, streamed=True)

    async def go() -> bytes:
        pos = 0

        async def read_some(n: int) -> bytes:
            nonlocal pos
            out = body[pos : pos + n]
            pos += len(out)
            return out

        src = Source(read_some)
        first = await read_header(src)
        assert first is not None
        await skip_member(src, first, None)
        second = await read_header(src)
        assert second is not None
        assert second.name == "keep"
        return b"".join([c async for c in member_data(src, second, None)])

    assert asyncio.run(go()) == b"k" * 10


def job(path: str, size: int | None = 100_000, resource: str = "DICOM", scan: str = "1") -> Job:
    uri = f"/data/experiments/E/scans/{scan}/resources/{resource}/files/{path}"
    return Job(uri, f"out/{scan}/{resource}/{path}", size, None)


def test_mode_choice() -> None:
    small = [job(f"{i}.dcm") for i in range(10)]
    few = [job(f"{i}.dcm", scan="2") for i in range(3)]
    big = [job(f"{i}.nii", size=50_000_000, scan="3") for i in range(10)]
    unknown = [job(f"{i}.dcm", size=None, scan="4") for i in range(10)]
    batches, singles, reasons = choose(small + few + big + unknown, Mode.AUTO)
    assert [b.resource_uri for b in batches] == ["/data/experiments/E/scans/1/resources/DICOM"]
    assert len(singles) == 23
    assert any(r.startswith("zip: ") and "10 small files" in r for r in reasons)
    assert any("per-file" in r and "large files" in r for r in reasons)
    assert choose(small, Mode.FILES)[0] == []
    assert len(choose(few, Mode.ZIP)[0]) == 1
    assert split_uri("/data/experiments/E/resources/QC/files/a/files/b") == (
        "/data/experiments/E/resources/QC",
        "a/files/b",
    )


def test_member_names_map_to_planned_paths_only() -> None:
    expected = {p: job(p) for p in ("a.dcm", "sub/b.dcm", "files/c.dcm")}
    by_base: dict[str, list[str]] = {}
    for p in expected:
        by_base.setdefault(p.rsplit("/", 1)[-1], []).append(p)
    assert member_path("S/scans/1-T1/resources/DICOM/files/a.dcm", expected, by_base) == "a.dcm"
    assert member_path("S/scans/1/DICOM/sub/b.dcm", expected, by_base) == "sub/b.dcm"
    assert member_path("x/files/files/c.dcm", expected, by_base) == "files/c.dcm"
    # Path tricks and strangers map to nothing, so they are never written.
    assert member_path("../../etc/passwd", expected, by_base) is None
    assert member_path("/abs/zzz.dcm", expected, by_base) is None
    assert member_path("S/files/../a.dcm", expected, by_base) is None
