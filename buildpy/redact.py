"""Credentials in URLs, kept out of everything buildpy shows. Pure.

An index URL may carry ``user:token@``. buildpy passes such URLs to assemble as
build-only values, so they never reach the image; what is shown (its own log
lines, errors, and assemble's output as it streams to stderr) goes through
``mask``, which leaves ``user:***@``. pip masks its own output the same way;
micropipenv, for one, prints lock files as they are.
"""

from __future__ import annotations

import re

# scheme://user:password@ -> the password, up to the last @ before the host part
_CREDENTIALS = re.compile(r"(?P<keep>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^\s/]*@")
MASK = "***"


def mask(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` replaced by ***."""
    return _CREDENTIALS.sub(rf"\g<keep>{MASK}@", text)


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
