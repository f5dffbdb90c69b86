"""The PostgreSQL store (``postgresql://``), shared by a fleet of workers."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from langchain_seedlock._errors import StoreError
from langchain_seedlock._store._base import BaselineStore

_SECRET_PARAMS = frozenset({"password", "pass", "pwd", "sslpassword"})


def redact_url(url: str) -> str:
    """``url`` with its password (userinfo or ``?password=``) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//[^/@]*@", "//***@", url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in _SECRET_PARAMS for k, _ in pairs):
            query = urlencode(
                [(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*"
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class PostgresStore(BaselineStore):  # pragma: no cover - placeholder until implemented
    """Placeholder."""

    def __init__(self, url: str, **options: Any) -> None:
        raise StoreError(f"PostgreSQL store not implemented yet ({redact_url(url)})")
