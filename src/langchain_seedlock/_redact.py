"""Credentials out of everything the package prints, logs, stores or raises.

One helper, `redact_url`, used wherever a URL leaves the package: store URLs
(``store.url``, ``seedlock.store_url``, error messages), the probe's
``base_url`` (``seedlock probe --json``), CLI output.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Query parameters that carry a secret (libpq's ``password``, ``sslpassword``,
# an API key passed in a query string...). Compared lower-cased.
SECRET_PARAMS: Final = frozenset(
    {"password", "pass", "pwd", "sslpassword", "api_key", "apikey", "api-key", "key", "token",
     "access_token", "secret"}
)  # fmt: skip
MASK: Final = "***"


def redact_url(url: str) -> str:
    """``url`` with its password (userinfo or a secret query parameter) replaced by ``***``.

    ``postgresql://u:pw@h/db`` -> ``postgresql://u:***@h/db``;
    ``https://h/v1?api_key=sk-1`` -> ``https://h/v1?api_key=***``. A URL that
    cannot be parsed has everything between ``//`` and ``@`` masked.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//[^/@]*@", f"//{MASK}@", url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{MASK}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in SECRET_PARAMS for k, _ in pairs):
            query = urlencode(
                [(k, MASK if k.lower() in SECRET_PARAMS else v) for k, v in pairs], safe="*"
            )
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing to hide: as given (urlunsplit would drop sqlite:///'s "//")
    if "://" in url:
        rebuilt = f"{parts.scheme}://{netloc}{parts.path}"
        rebuilt += f"?{query}" if query else ""
        return rebuilt + (f"#{parts.fragment}" if parts.fragment else "")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_optional_url(url: str | None) -> str | None:
    """`redact_url` for a value that may be None (or not a string: returned as is)."""
    return redact_url(url) if isinstance(url, str) else url
