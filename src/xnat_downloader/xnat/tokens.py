"""XNAT alias tokens: a login that can be handed to unattended jobs instead of a password.

``GET /data/services/tokens/issue`` (the logged-in user's new token) answers
``{"alias": …, "secret": …, "estimatedExpirationTime": …}``; the pair logs in wherever a
user name and password do, and expires on the server's schedule (two days by default).
"""

from __future__ import annotations

from dataclasses import dataclass

from xnat_downloader.errors import ServerError
from xnat_downloader.http.client import XnatClient


@dataclass(frozen=True)
class AliasToken:
    alias: str
    secret: str
    expires: str  # as the server said it, "" if it did not


async def issue_token(xs: XnatClient) -> AliasToken:
    """A new alias token for the logged-in user."""
    doc = await xs.get_json("/data/services/tokens/issue", what="a new alias token")
    alias = doc.get("alias") if isinstance(doc, dict) else None
    secret = doc.get("secret") if isinstance(doc, dict) else None
    if not isinstance(alias, str) or not isinstance(secret, str) or not alias or not secret:
        msg = "the server's answer to /data/services/tokens/issue has no alias and secret"
        raise ServerError(msg)
    return AliasToken(alias, secret, str(doc.get("estimatedExpirationTime", "") or ""))
