"""What an archive on local disk holds, read without sending it: its files' sizes and MD5s
(nested archives opened), its file count from the zip's directory alone, the session folder
and study a zip of XNAT's download layout stands for, its studies.  An archive that cannot
be read is a :class:`UsageError` naming it ("nothing from it was sent")."""

from __future__ import annotations

import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO

from xnat_downloader import aio
from xnat_downloader.errors import UsageError
from xnat_downloader.plan.upload import archive_type, study_uid_in_header
from xnat_downloader.transfer.localfs import digest_stream, stored_member_digest


def archive_members(path: Path) -> list[tuple[str, int, str]]:
    """(name, size, md5) of an archive's files, read locally; nested archives opened too."""

    def digest(reader: IO[bytes]) -> tuple[int, str]:
        md5, size = digest_stream(reader)
        return size, md5

    out: list[tuple[str, int, str]] = []
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf, open(path, "rb") as raw:
                for info in zf.infolist():
                    if info.is_dir():
                        continue
                    if archive_type(info.filename):
                        with zf.open(info) as reader:
                            nested = _spill(reader)
                        try:
                            out += archive_members(nested)
                        finally:
                            nested.unlink(missing_ok=True)
                        continue
                    stored = stored_member_digest(raw, info)  # most are: DICOM barely deflates
                    if stored is not None:
                        out.append((info.filename, stored[1], stored[0]))
                        continue
                    with zf.open(info) as reader:
                        out.append((info.filename, *digest(reader)))
            return out
        with tarfile.open(path) as tf:
            for member in tf:
                extracted = tf.extractfile(member) if member.isfile() else None
                if extracted is not None:
                    out.append((member.name, *digest(extracted)))
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise _unreadable(path, exc) from exc
    return out


def zip_identity(path: Path, head: int = 64 * 1024) -> tuple[str, str] | None:
    """(folder, study UID) of a zip whose files all sit under one top folder (the layout of
    XNAT's own downloads, whose folder the importer takes as the session's label), the UID
    from the header of its first DICOM file (of the first few) by
    :func:`study_uid_in_header`: cheap enough to ask of every archive before it is sent (no
    DICOM library, one member's first bytes).  None for anything else."""
    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as zf:
            members = [i for i in zf.infolist() if not i.is_dir()]
            tops = {PurePosixPath(i.filename).parts[0] for i in members if "/" in i.filename}
            if len(tops) != 1 or any("/" not in i.filename for i in members):
                return None
            for info in [i for i in members if not archive_type(i.filename)][:3]:
                with zf.open(info) as reader:
                    if found := study_uid_in_header(reader.read(head)):
                        return tops.pop(), found
    except (zipfile.BadZipFile, EOFError, OSError):
        return None
    return None


def study_uids(path: Path) -> set[str]:
    """The study instance UIDs of an archive's DICOM files (headers only; a member that is
    not DICOM is passed over).  Empty for an archive that cannot be read."""
    import pydicom  # only here: an upload of archives that meets an existing session

    def uid(reader: IO[bytes]) -> str:
        try:
            ds = pydicom.dcmread(
                reader, stop_before_pixels=True, specific_tags=["StudyInstanceUID"]
            )
        except Exception:  # not DICOM (a NIFTI, a text file) or cut short: no study here
            return ""
        return str(ds.get("StudyInstanceUID", "") or "")

    found: set[str] = set()
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    aio.check_abandoned()
                    if not info.is_dir() and not archive_type(info.filename):
                        with zf.open(info) as reader:
                            found.add(uid(reader))
        else:
            with tarfile.open(path) as tf:
                for member in tf:
                    aio.check_abandoned()
                    extracted = tf.extractfile(member) if member.isfile() else None
                    if extracted is not None:
                        found.add(uid(extracted))
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError):
        return set()
    found.discard("")
    return found


def _unreadable(path: Path, exc: Exception) -> UsageError:
    try:
        empty = path.stat().st_size == 0
    except OSError:
        empty = False
    if empty:
        return UsageError(f"{path} is empty (0 bytes); nothing from it was sent")
    # A file that is no archive at all meets tarfile's guess at its compression, whose
    # error lists each one it tried, a line each: said in a few words instead.
    reason = str(exc)
    if "\n" in reason or not reason:
        reason = "neither a zip nor a tar file, or cut short"
    return UsageError(
        f"{path} is not a readable zip, tar or tar.gz archive ({reason}); nothing from it was sent"
    )


def _spill(reader: IO[bytes]) -> Path:
    """Copy a nested archive to a temporary file, in chunks (it may be gigabytes)."""
    with tempfile.NamedTemporaryFile(delete=False, suffix=".zip") as f:
        try:
            while data := reader.read(1 << 20):
                aio.check_abandoned()
                f.write(data)
        except BaseException:
            Path(f.name).unlink(missing_ok=True)
            raise
        return Path(f.name)


def zip_file_count(path: Path) -> int | None:
    """How many files a zip holds, from its central directory alone (no member is read);
    None for anything else (a tar, or a cut-off zip, which has no directory: both are read
    whole, and an unreadable one refused, before anything is sent), or for a zip that holds
    archives (they are counted by opening them)."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise _unreadable(path, exc) from exc
    if not names or any(archive_type(n) for n in names):
        return None
    return len(names)
