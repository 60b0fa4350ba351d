"""Credentials kept out of everything buildpy shows. Pure.

For ``buildpy plan``, three rules, applied in this order:

* values that are never shown (``--build-env``: the option exists for tokens);
* keys that look secret (``*TOKEN*``, ``*PASSWORD*``, ``*SECRET*``, ``*KEY*``, ...): the
  whole value;
* anywhere in a value, the password of a URL (``https://user:pass@host`` becomes
  ``https://user:***@host``) or a user part alone, which is usually a token
  (``https://token@host`` becomes ``https://***@host``).

Masking errs on the side of hiding: ``APP_KEYS_DIR`` is masked too.

An index URL may carry ``user:token@``. buildpy passes such URLs to assemble as
build-only values, so they never reach the image; what is shown (its own log
lines, errors, and assemble's output as it streams to stderr) goes through
``mask``, the third rule alone. pip masks its own output the same way;
micropipenv, for one, prints lock files as they are.
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


def mask(text: str) -> str:
    """``text`` with the credentials of every URL in it masked (``user:***@``)."""
    return without_credentials(text)


def mask_bytes(data: bytes) -> bytes:
    return mask(data.decode("utf-8", errors="surrogateescape")).encode(
        "utf-8", errors="surrogateescape"
    )


class LineMasker:
    """Masks a byte stream that arrives in chunks: a URL may be split between two.

    Whole lines (ended by ``\\n`` or ``\\r``) are masked and passed on at once; the rest
    waits for its line to end, or for ``flush``.
    """

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._partial + chunk
        end = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        if len(data) - end > 64 * 1024:  # no line end for a long while: let it go
            end = len(data)
        self._partial = data[end:]
        return mask_bytes(data[:end]) if end else b""

    def flush(self) -> bytes:
        rest, self._partial = self._partial, b""
        return mask_bytes(rest)
