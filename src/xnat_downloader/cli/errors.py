"""The one table from exceptions to exit codes and messages (CONTRACT §4)."""

from __future__ import annotations

from xnat_downloader.errors import (
    AccessDenied,
    AuthError,
    ConnectionFailed,
    LockedError,
    LoginPageError,
    NotFound,
    ReceiverUnreachable,
    ServerError,
    UsageError,
    XnatError,
)

EXIT_OK = 0
EXIT_FAILED_FILES = 1
EXIT_USAGE = 2

# (exception type, exit code, hint shown after the message); first match wins.
TABLE: list[tuple[type[BaseException], int, str]] = [
    (AuthError, EXIT_USAGE, "check the user name and password, or the alias token"),
    (AccessDenied, EXIT_USAGE, "ask a project owner for access"),
    (NotFound, EXIT_USAGE, "check the project, subject and session names (IDs or labels)"),
    (UsageError, EXIT_USAGE, ""),
    (LockedError, EXIT_USAGE, ""),
    (LoginPageError, EXIT_USAGE, "is the URL the XNAT server itself (not a login portal)?"),
    (ReceiverUnreachable, EXIT_USAGE, "check its host and port, and that it is running"),
    (ConnectionFailed, EXIT_USAGE, "check the server URL and your network"),
    (ServerError, EXIT_FAILED_FILES, ""),
    (XnatError, EXIT_FAILED_FILES, ""),
]


def exit_code_and_message(exc: BaseException) -> tuple[int, str]:
    """The exit code and the line for ``exc``: its message, then the table's hint unless
    the message already names the command to run (a second piece of advice would only
    blur the first)."""
    for kind, code, hint in TABLE:
        if isinstance(exc, kind):
            message = str(exc)
            if not hint or "xnat-downloader " in message:
                return code, message
            return code, f"{message}; {hint}"
    return EXIT_FAILED_FILES, str(exc)
