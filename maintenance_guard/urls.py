"""Credentials out of every URL the package shows (CLI, logs, reports, pages).

`mask_url` replaces the password of a URL's userinfo and the values of password-like query
parameters (``?password=``, ``sentinel_password=``) with ``***``; `redact` does the same to
any text that may quote a URL or its password, such as an exception message.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "***"

# Query parameters whose value is a secret (redis-py and kombu spell them this way).
_SECRET_PARAM = re.compile(r"pass|secret|token|credential", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``url`` with its password and password-like query parameters replaced by ``***``.

    ``redis://:S3cret@host/0`` -> ``redis://:***@host/0``; a userinfo without a colon
    (``redis://S3cret@host``, often meant as a password) is masked whole. Never raises;
    works on malformed URLs and on ``redis+sentinel://`` host lists.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    head, qmark, query = rest.partition("?")
    if not head.startswith("/") and "@" in head:
        # The userinfo ends at the last "@" before the query: a password with an
        # unescaped "/" or "@" is still masked whole.
        userinfo, _, location = head.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        head = f"{user}:{MASK}@{location}" if colon else f"{MASK}@{location}"
    if qmark:
        query = "&".join(_mask_param(part) for part in query.split("&"))
    return f"{scheme}{sep}{head}{qmark}{query}"


def _mask_param(part: str) -> str:
    name, equals, value = part.partition("=")
    if equals and value and _SECRET_PARAM.search(unquote(name)):
        return f"{name}={MASK}"
    return part


def url_secrets(url: str) -> list[str]:
    """The secrets written in ``url`` (password, password-like query values), as written
    and decoded, longest first."""
    found: set[str] = set()
    try:
        parts = urlsplit(url)
        if parts.password:
            found.add(parts.password)
        elif parts.username and ":" not in parts.netloc.rpartition("@")[0]:
            found.add(parts.username)
        for name, value in parse_qsl(parts.query, keep_blank_values=False):
            if _SECRET_PARAM.search(name):
                found.add(value)
    except ValueError:
        pass
    head = url.partition("?")[0].partition("://")[2] or url
    if "@" in head and not head.startswith("/"):
        userinfo = head.rpartition("@")[0]
        found.add(userinfo.partition(":")[2] if ":" in userinfo else userinfo)
    for value in list(found):
        found.add(unquote(value))
    return sorted((s for s in found if s), key=len, reverse=True)


def redact(text: str, *urls: str | None) -> str:
    """``text`` with each of ``urls`` masked and every secret of them replaced by ``***``."""
    for url in urls:
        if not url:
            continue
        masked = mask_url(url)
        if url != masked:
            text = text.replace(url, masked)
        for secret in url_secrets(url):
            if len(secret) >= 3:  # shorter ones would garble the text, and guard little
                text = text.replace(secret, MASK)
    return text
