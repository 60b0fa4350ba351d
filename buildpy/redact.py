"""What ``buildpy plan`` may show of a value: credentials masked. Pure.

Three rules, applied in this order:

* values that are never shown (``--build-env``: the option exists for tokens);
* keys that look secret (``*TOKEN*``, ``*PASSWORD*``, ``*SECRET*``, ``*KEY*``, ...): the
  whole value;
* anywhere in a value, the password of a URL (``https://user:pass@host`` becomes
  ``https://user:***@host``) or a user part alone, which is usually a token
  (``https://token@host`` becomes ``https://***@host``).

Masking errs on the side of hiding: ``APP_KEYS_DIR`` is masked too.
"""

from __future__ import annotations

import re

MASK = "***"
SECRET_WORDS = (
    "TOKEN",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "SECRET",
    "KEY",
    "CREDENTIAL",
    "AUTH",
    "PRIVATE",
    "COOKIE",
    "SESSION",
    "SIGNATURE",
)
# scheme://userinfo@ : userinfo up to the first '@' before the host, no '/' in it.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")


def looks_secret(key: str) -> bool:
    """Whether the variable's name says it holds a secret."""
    upper = key.upper()
    return any(word in upper for word in SECRET_WORDS)


def without_credentials(text: str) -> str:
    """``text`` with the credentials of every URL in it masked."""

    def mask(match: re.Match[str]) -> str:
        user, colon, _ = match.group("userinfo").partition(":")
        shown = f"{user}:{MASK}" if colon else MASK
        return f"{match.group('scheme')}{shown}@"

    return _USERINFO.sub(mask, text)


def shown(key: str, value: str, *, hidden: bool = False) -> tuple[str, bool]:
    """The value as a plan shows it, and whether anything was masked.

    ``hidden``: never show it (``--build-env``). An empty value stays empty.
    """
    if value and (hidden or looks_secret(key)):
        return MASK, True
    masked = without_credentials(value)
    return masked, masked != value
