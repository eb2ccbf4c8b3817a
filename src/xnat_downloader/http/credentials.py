"""Where credentials come from, in order: flags, environment, ~/.netrc, ~/.xnatPass, prompt.

Pure resolution (:func:`resolve`) is separated from the interactive prompt so tests can drive
every source.  Passwords never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import getpass
import netrc
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from xnat_downloader.errors import UsageError


@dataclass(frozen=True)
class Credentials:
    """A user and password (or an alias token's alias and secret) for one server."""

    user: str | None
    password: str | None = field(default=None, repr=False)
    source: str = "none"

    @property
    def complete(self) -> bool:
        return bool(self.user) and self.password is not None


def host_key(url: str) -> str:
    """``host[:port]`` of a server URL, as .netrc and .xnatPass entries name it."""
    parts = urlsplit(url if "://" in url else f"https://{url}")
    return parts.netloc.rsplit("@", 1)[-1]


def from_netrc(url: str, path: Path) -> Credentials | None:
    if not path.is_file():
        return None
    try:
        data = netrc.netrc(str(path))
    except (netrc.NetrcParseError, OSError) as exc:
        msg = f"cannot read {path}: {exc}"
        raise UsageError(msg) from exc
    key = host_key(url)
    for name in (key, key.split(":", 1)[0]):
        entry = data.authenticators(name)
        if entry:
            login, _account, password = entry
            return Credentials(login, password, f"netrc ({path})")
    return None


def xnatpass_entries(path: Path) -> list[tuple[str, str, str]]:
    """xget's ``~/.xnatPass``: lines ``+user@http://host:port/xnat=password`` (``+``
    optional), as (user, server, password)."""
    entries = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip().lstrip("+")
        if not line or line.startswith("#") or "@" not in line or "=" not in line:
            continue
        user, _, rest = line.partition("@")
        server, _, password = rest.partition("=")
        entries.append((user, server, password))
    return entries


def from_xnatpass(url: str, path: Path) -> Credentials | None:
    if not path.is_file():
        return None
    key = host_key(url)
    for user, server, password in xnatpass_entries(path):
        if host_key(server) in (key, key.split(":", 1)[0]):
            return Credentials(user, password, f"xnatPass ({path})")
    return None


def resolve(
    url: str,
    user: str | None,
    password: str | None,
    env: Mapping[str, str],
    home: Path,
    *,
    passfile: Path | None = None,
) -> Credentials:
    """Credentials from the non-interactive sources, most specific first.  ``passfile``
    (xget's ``-passfile``), being named on the command line, is read before the environment.

    A user given on the command line without a password still takes the password from the
    environment or a password file *for that user*; a file entry for another user is ignored.
    """
    if user and password is not None:
        return Credentials(user, password, "command line")
    if passfile is not None:
        if not passfile.is_file():
            msg = f"cannot read the pass file {passfile}: no such file"
            raise UsageError(msg)
        found = from_xnatpass(url, passfile)
        if found is not None and (user is None or found.user == user):
            return found
    env_user = env.get("XNAT_USER")
    env_pass = env.get("XNAT_PASS")
    if env_pass is not None and (user is None or env_user in (None, user)):
        return Credentials(user or env_user, env_pass, "environment")
    netrc_path = Path(env["NETRC"]) if env.get("NETRC") else home / ".netrc"
    for found in (from_netrc(url, netrc_path), from_xnatpass(url, home / ".xnatPass")):
        if found is not None and (user is None or found.user == user):
            return found
    return Credentials(user or env_user, None, "none")


def complete(
    creds: Credentials,
    *,
    interactive: bool,
    prompt: Callable[[str], str] = getpass.getpass,
    ask: Callable[[str], str] = input,
) -> Credentials:
    """Prompt for what is missing, but only on a terminal; otherwise leave it missing.
    End of input at a prompt (Ctrl-D, or a terminal with nothing behind it) is a
    UsageError that says where else credentials can come from."""
    if creds.complete or not interactive:
        return creds
    user = creds.user
    try:
        if not user:
            user = ask("user: ").strip()
        password = prompt("password: ")  # the seed tool's prompts: "user: ", "password: "
    except EOFError:
        msg = (
            "no credentials: the prompt for them met the end of input; give the user with "
            "-u (or XNAT_USER) and the password in XNAT_PASS or ~/.netrc"
        )
        raise UsageError(msg) from None
    return Credentials(user, password, "prompt")


def stdin_is_tty() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def default_home() -> Path:
    return Path(os.path.expanduser("~"))
