"""Twilio's request signature (`X-Twilio-Signature`), without the 50 MB `twilio` package.

Twilio signs the full URL it called (scheme, host, path and query string, as configured),
followed by every POST parameter name and value, parameters sorted by name; the string is
HMAC-SHA1'd with the account's auth token and base64-encoded
(https://www.twilio.com/docs/usage/webhooks/webhooks-security).

Two details follow Twilio's own helper libraries (twilio-python's `RequestValidator`, which
the tests check this against): the values of a repeated parameter are appended sorted (and a
repeated identical value once), and a URL is accepted as signed with or without its port,
because Twilio's side is inconsistent about the standard port (":443" / ":80").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections import defaultdict
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

Params = Mapping[str, str] | Iterable[tuple[str, str]]


def _pairs(params: Params) -> Iterable[tuple[str, str]]:
    return params.items() if isinstance(params, Mapping) else params


def signed_string(url: str, params: Params) -> str:
    values: dict[str, set[str]] = defaultdict(set)
    for name, value in _pairs(params):
        values[name].add(value)
    parts = [url]
    for name in sorted(values):
        parts.extend(name + value for value in sorted(values[name]))
    return "".join(parts)


def compute_signature(auth_token: str, url: str, params: Params = ()) -> str:
    mac = hmac.new(
        auth_token.encode("utf-8"), signed_string(url, params).encode("utf-8"), hashlib.sha1
    )
    return base64.b64encode(mac.digest()).decode("ascii")


def url_variants(url: str) -> list[str]:
    """The URL as given, plus it with the standard port added (when it has none) or without
    its port (when it has one): the forms Twilio may have signed."""
    variants = [url]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return variants  # not a URL with a valid port: only the exact string can match
    host = parts.netloc.rsplit("@", 1)[-1]
    userinfo = parts.netloc[: len(parts.netloc) - len(host)]
    if port is None:
        standard = 443 if parts.scheme == "https" else 80
        other = parts._replace(netloc=f"{userinfo}{host}:{standard}")
    else:
        other = parts._replace(netloc=userinfo + host.rsplit(":", 1)[0])
    variants.append(urlunsplit(other))
    return variants


def is_valid(auth_token: str, url: str, params: Params, signature: str | None) -> bool:
    """Constant-time check of a signature against every form of the URL Twilio may sign."""
    if not signature:
        return False
    pairs = list(_pairs(params))
    # "replace": a header of bytes that are not UTF-8 reaches us holding surrogates.
    given = signature.strip().encode("utf-8", "replace")
    ok = False
    for candidate in url_variants(url):
        expected = compute_signature(auth_token, candidate, pairs).encode("ascii")
        # No early exit: every variant is computed and compared in constant time.
        ok |= hmac.compare_digest(expected, given)
    return ok
