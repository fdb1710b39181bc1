"""Credentials out of printed text: every message that may hold a store URL goes through
:func:`mask_credentials` (the library's exceptions all do, and the demo's output)."""

from __future__ import annotations

import re

__all__ = ["MASK", "mask_credentials"]

# A URL inside any text: a scheme, "://", then up to whitespace, a quote or a bracket.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]*")
# A query parameter that carries a secret (password=, passwd=, pwd=, secret=, token=...).
_SECRET_PARAM = re.compile(r"(?i)([?&;][^=&;#]*(?:pass|pwd|secret|token)[^=&;#]*=)[^&;#]*")
#: What a password becomes.
MASK = "***"
_MASKED_PARAM = r"\g<1>" + MASK


def mask_credentials(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``.

    ``redis://:s3cret@host:6379/0`` becomes ``redis://:***@host:6379/0``, and
    ``mongodb://app:pw@h1,h2/db?authSource=admin`` ``mongodb://app:***@h1,h2/db?...``;
    a secret query parameter (``?password=...``, ``token=``...) is masked too. The user
    name stays, for diagnosis. Text that starts with a scheme is taken as one URL to its
    end, so a password holding spaces or quotes is masked whole; in other text a URL ends
    at whitespace or a quote. Every message the library and the demo print that may hold
    a store URL goes through here.
    """
    if "://" not in text:
        return text
    if _URL_IN_TEXT.match(text):
        return _mask_url(text)
    return _URL_IN_TEXT.sub(lambda match: _mask_url(match.group()), text)


def _mask_url(url: str) -> str:
    scheme, rest = url.split("://", 1)
    # The last '@' ends the credentials, whatever a password contains ('@', '/', '?'): a
    # URL with an '@' in its path or query loses more than its password, never less.
    at = rest.rfind("@")
    if at != -1:
        user, colon, _password = rest[:at].partition(":")
        rest = f"{user}:{MASK}@{rest[at + 1 :]}" if colon else rest
    return f"{scheme}://{_SECRET_PARAM.sub(_MASKED_PARAM, rest)}"
