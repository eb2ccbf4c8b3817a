"""Read a zip as it streams in: local headers and member data, front to back, no seeking.

XNAT's zips come from Java's ZipOutputStream: deflated members with the sizes in a data
descriptor *after* the data, so the end of a member is where its deflate stream ends.
Stored members carry their size in the header, except from writers that stream stored data
(Python's zipfile does); for those the caller says how long the member should be (the
listing's size) and the descriptor's CRC checks it.  Encrypted members and anything that
does not parse raise :class:`ZipStreamError`: the caller then falls back to fetching the
files one by one, so a strange zip costs time, never correctness.

Names are returned as the zip gives them.  They are untrusted: the caller maps them onto
its own planned paths and never writes a member under its zip name.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

LOCAL = b"PK\x03\x04"
CENTRAL = b"PK\x01\x02"
END = b"PK\x05\x06"
END64 = b"PK\x06\x06"
DESCRIPTOR = b"PK\x07\x08"
CHUNK = 256 * 1024
MAX_NAME = 64 * 1024


class ZipStreamError(Exception):
    """The body is not a zip this reader can follow."""


class Source:
    """An async byte source with exact reads and push-back, over ``read_some(n)``, which
    returns at most ``n`` bytes and ``b""`` only at the end."""

    def __init__(self, read_some: Callable[[int], Awaitable[bytes]]) -> None:
        self._read_some = read_some
        self._buffer = bytearray()

    async def some(self, limit: int = CHUNK) -> bytes:
        if self._buffer:
            data = bytes(self._buffer[:limit])
            del self._buffer[:limit]
            return data
        return await self._read_some(limit)

    async def exactly(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            data = await self.some(n - len(out))
            if not data:
                msg = f"the zip ends early ({len(out)} of {n} bytes)"
                raise ZipStreamError(msg)
            out += data
        return bytes(out)

    def push_back(self, data: bytes) -> None:
        self._buffer[:0] = data


@dataclass(frozen=True)
class Header:
    name: str
    method: int
    flags: int
    crc: int
    compressed: int | None  # None: given in the data descriptor
    size: int | None
    zip64: bool


async def read_header(src: Source) -> Header | None:
    """The next member's local header, or None at the central directory (the end)."""
    signature = await src.exactly(4)
    if signature in (CENTRAL, END, END64):
        return None
    if signature != LOCAL:
        msg = f"expected a zip member header, found {signature!r}"
        raise ZipStreamError(msg)
    fixed = await src.exactly(26)
    (_version, flags, method, _time, _date, crc, csize, usize, nlen, xlen) = struct.unpack(
        "<HHHHHIIIHH", fixed
    )
    if flags & 0x1:
        raise ZipStreamError("the zip is encrypted")
    if method not in (0, 8):
        msg = f"unsupported zip compression method {method}"
        raise ZipStreamError(msg)
    raw_name = await src.exactly(nlen)
    extra = await src.exactly(xlen)
    name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", errors="replace")
    zip64 = False
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        if tag == 0x0001:
            zip64 = True
            values = extra[pos + 4 : pos + 4 + length]
            fields = [v for (v,) in struct.iter_unpack("<Q", values[: len(values) // 8 * 8])]
            if usize == 0xFFFFFFFF and fields:
                usize = fields.pop(0)
            if csize == 0xFFFFFFFF and fields:
                csize = fields.pop(0)
        pos += 4 + length
    deferred = bool(flags & 0x8)
    return Header(
        name=name,
        method=method,
        flags=flags,
        crc=crc,
        compressed=None if deferred and csize == 0 else csize,
        size=None if deferred and usize == 0 else usize,
        zip64=zip64,
    )


async def member_data(
    src: Source, header: Header, expected_size: int | None, *, check_crc: bool = True
) -> AsyncIterator[bytes]:
    """The member's uncompressed bytes, then its CRC checked (a mismatch raises; without
    ``check_crc``, for a caller that checks a stronger digest, it is read, not computed).
    ``expected_size`` is used only for a stored member whose size comes after its data."""
    crc = 0
    if header.method == 8:
        inflater = zlib.decompressobj(-15)
        while not inflater.eof:
            data = await src.some()
            if not data:
                raise ZipStreamError(f"the zip ends inside {header.name!r}")
            try:
                out = inflater.decompress(data)
            except zlib.error as exc:
                msg = f"corrupt deflate data in {header.name!r}: {exc}"
                raise ZipStreamError(msg) from exc
            if out:
                if check_crc:
                    crc = zlib.crc32(out, crc)
                yield out
        if inflater.unused_data:
            src.push_back(inflater.unused_data)
    else:
        left = header.compressed if header.compressed is not None else expected_size
        if left is None:
            msg = f"cannot tell where the stored member {header.name!r} ends"
            raise ZipStreamError(msg)
        while left:
            data = await src.some(min(left, CHUNK))
            if not data:
                raise ZipStreamError(f"the zip ends inside {header.name!r}")
            left -= len(data)
            if check_crc:
                crc = zlib.crc32(data, crc)
            yield data
    expected_crc = header.crc
    if header.flags & 0x8:
        first = await src.exactly(4)
        if first == DESCRIPTOR:
            first = await src.exactly(4)
        expected_crc = struct.unpack("<I", first)[0]
        await src.exactly(16 if header.zip64 else 8)  # the sizes; the CRC and MD5 decide
    if check_crc and crc != expected_crc:
        msg = f"CRC mismatch in {header.name!r}"
        raise ZipStreamError(msg)


async def skip_member(src: Source, header: Header, expected_size: int | None) -> None:
    async for _ in member_data(src, header, expected_size):
        pass
