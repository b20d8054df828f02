"""Hiding credentials in what the provider shows or records: environment variables and URLs.

A variable is secret by its name (:data:`SENSITIVE_NAME`) or by its value (a URL that carries a
user and password, or a token parameter). URLs lose their credentials in every form git and
database clients accept: ``scheme://user:pass@host`` (also with ``@`` or ``/`` in the password),
``scheme://token@host``, ``user:pass@host:path`` (scp-like) and ``?access_token=`` / ``?token=``
query parameters.
"""

from __future__ import annotations

import re

MASK = "***"
SENSITIVE_NAME = re.compile(
    r"PASS|PWD|SECRET|TOKEN|KEY|CREDENTIAL|AUTH|PRIVATE|SESSION|COOKIE", re.IGNORECASE
)
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_TOKEN_PARAM = re.compile(
    r"(?P<key>[?&;](?:access_token|private_token|oauth_token|auth_token|token|password|secret)=)"
    r"(?P<value>[^&#;\s]*)",
    re.IGNORECASE,
)
# The host (and port) after the userinfo: what decides which "@" ends the userinfo.
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%-]+)(?::\d*)?")
# "host:port/" at the start of an authority without userinfo.
_HOST_PORT = re.compile(r"^[A-Za-z0-9._~%-]+:\d+$")
# scp-like git address: [userinfo@]host:path, no scheme.
_SCP = re.compile(r"^(?P<userinfo>[^\s/]+)@(?P<rest>[A-Za-z0-9._-]+:(?!//).*)$")


def sensitive_name(name: str) -> bool:
    return bool(SENSITIVE_NAME.search(name))


def _userinfo_end(text: str, start: int) -> int | None:
    """Index of the ``@`` that ends the userinfo of the URL whose authority starts at ``start``.

    The last plausible one: a password may hold ``@`` and ``/``, and masking part of a path is
    better than showing part of a password.
    """
    end = len(text)
    for stop in (" ", "\t", "\n"):
        found = text.find(stop, start)
        if found != -1:
            end = min(end, found)
    found_at = None
    at = text.find("@", start, end)
    while at != -1:
        userinfo = text[start:at]
        host = _HOST.match(text, at + 1)
        host_ends = host is not None and host.end() > at + 1
        after = text[host.end()] if host_ends and host.end() < end else ""  # type: ignore[union-attr]
        if host_ends and after in ("", "/", "?", "#", ":"):
            first = userinfo.split("/", 1)[0]
            # "/" in a userinfo only after "user:" (a password with a slash), not in "host:443/path".
            if "/" not in userinfo or (":" in first and not _HOST_PORT.match(first)):
                found_at = at
        at = text.find("@", at + 1, end)
    return found_at


def redact_url(text: str, replacement: str = MASK + "@") -> str:
    """``text`` with the userinfo of every URL in it replaced (``replacement=""`` drops it) and the
    values of token query parameters masked. Text without a URL comes back unchanged."""
    if "@" not in text and "=" not in text:
        return text
    out = []
    pos = 0
    for match in _SCHEME.finditer(text):
        if match.start() < pos:
            continue
        at = _userinfo_end(text, match.end())
        if at is None:
            continue
        out.append(text[pos : match.end()])
        out.append(replacement)
        pos = at + 1
    out.append(text[pos:])
    result = "".join(out)
    if "://" not in text:
        scp = _SCP.match(result)
        if scp is not None:
            result = replacement + scp.group("rest") if replacement else scp.group("rest")
    return _TOKEN_PARAM.sub(lambda m: m.group("key") + MASK, result)


def mask_variable(name: str, value: str) -> str:
    """What the run history, the UI and the CLI show of an environment variable's value."""
    if sensitive_name(name):
        return MASK
    return redact_url(value)


def is_masked(name: str, shown: str) -> bool:
    """Whether a recorded value is a mask (of :func:`mask_variable`), not the value itself."""
    if shown == MASK and sensitive_name(name):
        return True
    return f"://{MASK}@" in shown or f"={MASK}" in shown


def secret_values(name: str, value: str) -> list[str]:
    """The parts of a variable that are secret: the whole value for a secret-looking name, else
    the userinfo (password) of each URL in it and its token parameters' values."""
    if sensitive_name(name):
        return [value] if value else []
    found = []
    for match in _SCHEME.finditer(value):
        at = _userinfo_end(value, match.end())
        if at is not None:
            userinfo = value[match.end() : at]
            found.append(userinfo.split(":", 1)[1] if ":" in userinfo else userinfo)
    found += [m.group("value") for m in _TOKEN_PARAM.finditer(value)]
    return [s for s in found if s]


def mask_variables(variables: dict[str, str]) -> dict[str, str]:
    return {k: mask_variable(k, v) for k, v in variables.items()}


__all__ = [
    "MASK",
    "is_masked",
    "mask_variable",
    "mask_variables",
    "redact_url",
    "secret_values",
    "sensitive_name",
]
