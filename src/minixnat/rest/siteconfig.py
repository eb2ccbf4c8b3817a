"""``/xapi/siteConfig``: the site preferences minixnat keeps, read and set as in XNAT.

minixnat keeps one: ``siteId``, what new subjects', sessions' and assessors' IDs start with
(``XNAT_E00001``; xnat4tests' XNAT sets ``Xnat4Tests``).  Setting it changes the IDs made
from then on, not those already given, as in XNAT.

- ``GET /xapi/siteConfig``: every preference kept, as a JSON object (logged-in users).
- ``GET /xapi/siteConfig/{name}``: one, as text; 404 for a preference minixnat does not keep.
- ``POST /xapi/siteConfig`` with a JSON object, or ``POST /xapi/siteConfig/{name}`` with
  the value as the body: set (site admins only).  A name minixnat does not keep, or a bad
  value, is refused with 400 and nothing is changed.
"""

from __future__ import annotations

import json

from minixnat.http.messages import HttpError, Response, text
from minixnat.store import Store, User

SITE_ID = "siteId"
KEPT = (SITE_ID,)


def preferences(store: Store) -> Response:
    """Every preference kept, as XNAT's ``GET /xapi/siteConfig`` gives them."""
    body = {SITE_ID: store.site_id()}
    return Response(200, json.dumps(body).encode(), "application/json")


def preference(store: Store, name: str) -> Response:
    """One preference's value."""
    if name not in KEPT:
        raise HttpError(
            404, f"minixnat keeps no site preference {name}; it keeps {', '.join(KEPT)}."
        )
    return text(store.site_id())


def set_preferences(store: Store, user: User, values: dict[str, object]) -> Response:
    """Set the preferences in ``values`` (all or none)."""
    if not user.admin:
        raise HttpError(403, "Only site admins may change the site's preferences.")
    unknown = sorted(set(values) - set(KEPT))
    if unknown:
        raise HttpError(
            400,
            f"minixnat keeps no site preference {', '.join(unknown)}; it keeps {', '.join(KEPT)}.",
        )
    if SITE_ID in values:
        value = values[SITE_ID]
        if not isinstance(value, str):
            raise HttpError(400, f"{SITE_ID} must be a string, not {value!r}.")
        store.set_site_id(value)
    return Response(200, b"", "text/plain")


def parse_object(body: bytes) -> dict[str, object]:
    """The JSON object a ``POST /xapi/siteConfig`` carries; 400 for anything else."""
    try:
        values = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HttpError(400, f"Send the preferences as a JSON object: {exc}") from None
    if not isinstance(values, dict):
        raise HttpError(400, "Send the preferences as a JSON object, name to value.")
    return values
