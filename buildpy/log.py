"""Logging, set up once: structlog to stderr, console on a terminal, JSON otherwise.

Results go to stdout (see ``cli``); everything here goes to stderr so that
``IMAGE=$(buildpy build .)`` captures only the image.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import structlog

from buildpy import redact


def configure(
    verbosity: int = 0, *, json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog. verbosity: -1 quiet (warnings), 0 info, 1+ debug."""
    out = stream if stream is not None else cast(TextIO, _Stderr())
    if json is None:
        json = not out.isatty()
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    renderer: Any
    if json:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            _masked,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def _masked(logger: Any, method: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
    """No credentials of a URL in any log line (``redact.mask`` on every text value)."""
    return {key: redact.mask(v) if isinstance(v, str) else v for key, v in event.items()}


def get(name: str) -> Any:
    """A bound logger for one module."""
    return structlog.get_logger(name)


class _Stderr:
    """Whatever ``sys.stderr`` is when a line is written (it may be replaced after set-up,
    as pytest does for each test)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()
