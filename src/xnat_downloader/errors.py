"""The one exception tree of xnat-downloader.

::

    XnatError
    ├── UsageError              bad input from the caller (dates, patterns, list files, paths)
    ├── ConnectionFailed        the server cannot be reached (DNS, refused, TLS, timeout)
    ├── ServerError             the server answered, but not as XNAT should
    │   └── LoginPageError      …with an HTML login/error page where data was expected
    ├── AuthError               wrong user name or password (never retried: accounts lock)
    ├── AccessDenied            logged in, but no access to this project or object
    ├── NotFound                no such project, subject, session or file
    ├── LockedError             another run is using this output directory
    └── TransferError           one file could not be fetched and verified
        ├── LocalWriteError     …a local write the run needs failed (a full disk)
        ├── LocalReadError      …a file being sent could not be read as planned
        └── IntegrityError      …its size or MD5 did not match what XNAT lists

The CLI maps these to exit codes in one place (``cli/errors.py``): 2 for usage,
authentication and permission errors, 1 for failed files.
"""

from __future__ import annotations


class XnatError(Exception):
    """Root of every error xnat-downloader raises on purpose."""


class UsageError(XnatError, ValueError):
    """The caller asked for something malformed or impossible."""


class ConnectionFailed(XnatError, ConnectionError):
    """The server could not be reached."""


class ReceiverUnreachable(ConnectionFailed):
    """Nothing answered at a DICOM receiver's host and port."""


class ServerError(XnatError):
    """The server answered with an unexpected status or body."""

    def __init__(self, message: str, *, status: int | None = None, url: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.url = url


class LoginPageError(ServerError):
    """An HTML page (a login form or an error page) came back where data was expected."""


class AuthError(XnatError, PermissionError):
    """The credentials were refused."""


class AccessDenied(XnatError, PermissionError):
    """Authenticated, but not allowed to read this object."""


class NotFound(XnatError, LookupError):
    """The named object does not exist (or is hidden from this user, as XNAT does)."""


class LockedError(XnatError):
    """Another xnat-downloader run holds the output directory's lock."""


class TransferError(XnatError):
    """A file could not be transferred."""


class LocalWriteError(TransferError):
    """A local write the run cannot go on without (its state database) failed, most often
    for a full disk.  The run ends: files already verified stay, a re-run resumes."""


class LocalReadError(TransferError):
    """A local file being sent went away, could not be read, or changed size since the
    upload was planned: that file (or session) fails, the others go on."""


class IntegrityError(TransferError):
    """A transferred file's size or MD5 differs from the server's listing."""
