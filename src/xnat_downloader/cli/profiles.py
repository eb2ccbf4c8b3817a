"""Named servers: ``--profile NAME`` from ``~/.config/xnat-downloader/config.toml``.

::

    [profiles.work]
    url = "https://xnat.example.org"
    user = "me"
    ca_bundle = "/etc/ssl/work-ca.pem"
    jobs = 8
    max_requests = 20      # request starts a second, as the server's administrators ask

A profile's values become the defaults of ``-w``, ``-u``, ``--ca-bundle``, ``-j`` and
``--max-requests``; flags given on the command line still win.  A password never goes in
this file (the command refuses one): keep it in ``~/.netrc`` or use an alias token.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xnat_downloader.errors import UsageError

KEYS = {
    "url": "web",
    "user": "user",
    "ca_bundle": "ca_bundle",
    "jobs": "jobs",
    "max_requests": "max_requests",
}


def config_path(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "xnat-downloader" / "config.toml"


def profile_name(argv: list[str], env: Mapping[str, str]) -> str | None:
    """The ``--profile`` asked for (``--profile NAME``, ``--profile=NAME``, or
    ``$XNAT_PROFILE``), or None."""
    for i, token in enumerate(argv):
        if token == "--profile" and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith("--profile="):
            return token.split("=", 1)[1]
    return env.get("XNAT_PROFILE") or None


def defaults_of(doc: Mapping[str, Any], name: str, path: Path) -> dict[str, Any]:
    """The argparse defaults a profile sets (pure); UsageError naming what is wrong."""
    profiles = doc.get("profiles", {})
    if not isinstance(profiles, dict) or name not in profiles:
        known = ", ".join(sorted(profiles)) if isinstance(profiles, dict) else ""
        raise UsageError(
            f"no profile {name!r} in {path}" + (f" (it has: {known})" if known else "")
            + f"; add a [profiles.{name}] table with url = \"https://…\""
        )  # fmt: skip
    table = profiles[name]
    if not isinstance(table, dict):
        raise UsageError(f"[profiles.{name}] in {path} must be a table of settings")
    if "password" in table or "secret" in table:
        raise UsageError(
            f"[profiles.{name}] in {path} holds a password: remove it and keep it in "
            "~/.netrc (or use an alias token); a config file is no place for secrets"
        )
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise UsageError(
            f"[profiles.{name}] in {path}: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(KEYS)}"
        )
    if "jobs" in table and not isinstance(table["jobs"], int):
        raise UsageError(f"[profiles.{name}] in {path}: jobs must be a whole number")
    rate = table.get("max_requests", 1)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
        raise UsageError(
            f"[profiles.{name}] in {path}: max_requests must be a positive number of "
            "requests a second"
        )
    for key in ("url", "user", "ca_bundle"):
        if key in table and not (isinstance(table[key], str) and table[key].strip()):
            raise UsageError(f'[profiles.{name}] in {path}: {key} must be text, e.g. {key} = "…"')
    return {KEYS[k]: v for k, v in table.items()}


def load_defaults(argv: list[str], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The defaults of the profile ``argv`` or the environment asks for ({} if none)."""
    env = os.environ if env is None else env
    name = profile_name(argv, env)
    if name is None:
        return {}
    path = config_path(env)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        msg = f"--profile {name}: there is no {path}; create it with a [profiles.{name}] table"
        raise UsageError(msg) from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    return defaults_of(doc, name, path)
