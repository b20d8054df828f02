"""CSRF protection for the UI's one state-changing action (cancelling a run).

The browser sends Airflow's login cookie with every request to the api-server, including a form
another site posts, so a POST the cookie authenticates must also carry a token only our own pages
know: an HMAC, under the api-server's ``[api] secret_key``, of a random nonce kept in an HttpOnly,
``SameSite=Strict`` cookie. The token is thus bound to the browser session and cannot be forged
without the server's secret. A request that authenticates with an ``Authorization: Bearer``
header needs no token: no other site can make a browser send that header.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from fastapi import HTTPException, Request, status
from fastapi.responses import Response

COOKIE = "mltrain_csrf"
FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
_NONCE = re.compile(r"^[0-9a-f]{32}$")


def _secret() -> bytes:
    from airflow.configuration import conf

    return (conf.get("api", "secret_key", fallback="") or "").encode()


def _sign(nonce: str) -> str:
    return hmac.new(_secret(), f"mltrain-csrf:{nonce}".encode(), hashlib.sha256).hexdigest()


def _nonce(request: Request) -> str | None:
    value = request.cookies.get(COOKIE, "")
    return value if _NONCE.match(value) else None


def token_for(request: Request) -> tuple[str, str | None]:
    """The token a page embeds, and the new nonce to set as a cookie when the browser has none."""
    nonce = _nonce(request)
    if nonce:
        return _sign(nonce), None
    nonce = secrets.token_hex(16)
    return _sign(nonce), nonce


def set_cookie(response: Response, request: Request, nonce: str) -> None:
    response.set_cookie(
        COOKIE,
        nonce,
        path="/",  # a proxy may serve the app under another path than the one it sees
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def check(request: Request, submitted: str | None) -> None:
    """Refuse (403) a cookie-authenticated POST whose token does not match the session's."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden: a cross-site request may not change a run")
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        return
    nonce = _nonce(request)
    if not nonce or not submitted or not hmac.compare_digest(submitted, _sign(nonce)):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"Forbidden: the request has no valid CSRF token (form field {FIELD!r} or header {HEADER!r}); "
            "reload the run's page and try again",
        )
