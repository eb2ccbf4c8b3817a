"""Templates and responses for the pages: Jinja2 with autoescaping, and small helpers.

Every value a user or an uploader chose (labels, descriptions, file names) reaches the page
through autoescaping; nothing is marked safe by hand.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from minixnat.http.messages import Response

_ENV = Environment(
    loader=PackageLoader("minixnat.pages", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)

HTML = "text/html;charset=UTF-8"
# Pages show private data and, after a hand-off, an alias token: never cache them.
NO_STORE = [("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")]
# The pages load nothing from elsewhere; their scripts and one stylesheet are ours, and the
# scripts talk only to this server (upload progress, the activity tracker).
CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
    "connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def human_size(size: int) -> str:
    """Bytes in the unit a person reads at a glance (1000-based, as disks are sold)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def counted(n: int, noun: str) -> str:
    """``1 file``, ``3 files``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


_ENV.filters["size"] = human_size
_ENV.filters["counted"] = counted


def page(template: str, code: int = 200, /, **context: Any) -> Response:
    body = _ENV.get_template(template).render(**context)
    headers = [*NO_STORE, ("Content-Security-Policy", CSP)]
    return Response(code, body.encode(), HTML, headers)


def redirect(location: str, status: int = 303) -> Response:
    """A redirect after a form post (303, so the browser follows with GET)."""
    return Response(status, b"", HTML, [("Location", location), *NO_STORE])


STATIC_TYPES = {".css": "text/css;charset=UTF-8", ".js": "text/javascript;charset=UTF-8"}


def static(name: str) -> Response | None:
    """A file of ``pages/static`` (only names listed in the package, never a path)."""
    suffix = name[name.rfind(".") :] if "." in name else ""
    if "/" in name or suffix not in STATIC_TYPES:
        return None
    item = resources.files("minixnat.pages").joinpath("static").joinpath(name)
    if not item.is_file():
        return None
    headers = [("Cache-Control", "max-age=3600"), ("X-Content-Type-Options", "nosniff")]
    return Response(200, item.read_bytes(), STATIC_TYPES[suffix], headers)
