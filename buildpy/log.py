"""Logging, set up once: lines for people on stderr, or structlog JSON events on request.

Results go to stdout (see ``cli``); everything here goes to stderr so that
``IMAGE=$(buildpy build .)`` captures only the image.

The default format is for people, on a terminal and in a CI log alike: one line per
stage of a build with its duration, the builder's own output (assemble, pip) set apart
as ``  | line``, warnings as ``WARNING: ...`` with a ``  hint: ...`` line. Colors only on
a terminal, and never with ``NO_COLOR`` set. ``--log-format json`` gives the same
events as structlog JSON lines, the builder's output included (one ``output`` event
per line).

structlog is imported only for JSON: importing it costs about 40 ms (its ``__init__``
imports ``structlog.stdlib``, which imports asyncio), paid by every command otherwise.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO, cast

from buildpy import redact

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
_LEVELS = {"debug": DEBUG, "info": INFO, "warning": WARNING, "error": ERROR}
OUTPUT_PREFIX = "  | "  # the builder's output, set apart from buildpy's own lines


class _State:
    """The configuration every logger reads when it writes (not when it is made)."""

    level = INFO
    json = False
    color = False
    stream: TextIO | None = None  # None: whatever sys.stderr is when a line is written
    pending: Lines | None = None  # an output whose last line is not finished yet


_state = _State()


def configure(
    verbosity: int = 0,
    *,
    json: bool | None = None,
    stream: TextIO | None = None,
    color: bool | None = None,
) -> None:
    """Set the level and format. verbosity: -1 quiet (warnings), 0 info, 1+ debug.

    ``json`` None or False: lines for people; ``color`` None: only when the stream is a
    terminal and ``NO_COLOR`` is unset."""
    _state.level = WARNING if verbosity < 0 else DEBUG if verbosity > 0 else INFO
    _state.json = bool(json)
    _state.stream = stream
    _state.pending = None
    if color is None:
        color = _out().isatty() and not os.environ.get("NO_COLOR")
    _state.color = color and not _state.json
    if _state.json:
        _configure_structlog(stream)


def _configure_structlog(stream: TextIO | None) -> None:
    import structlog  # only for JSON (see the module's docstring)

    structlog.configure(
        processors=[
            _masked,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_state.level),
        logger_factory=structlog.PrintLoggerFactory(
            stream if stream is not None else cast(TextIO, _Stderr())
        ),
        cache_logger_on_first_use=False,
    )


def _masked(logger: Any, method: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """No credentials of a URL in any log line (``redact.mask`` on every text value)."""
    return {key: redact.mask(v) if isinstance(v, str) else v for key, v in event.items()}


class Logger:
    """A module's logger: ``info(event, **fields)`` and the like, as structlog's."""

    def __init__(self, name: str) -> None:
        self.name = name

    def debug(self, event: str, **fields: Any) -> None:
        _emit(self.name, "debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        _emit(self.name, "info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        _emit(self.name, "warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        _emit(self.name, "error", event, fields)


def get(name: str) -> Logger:
    """A logger for one module (cheap; made at import time, configured later)."""
    return Logger(name)


def enabled(level: str) -> bool:
    return _LEVELS[level] >= _state.level


def _emit(name: str, level: str, event: str, fields: dict[str, Any]) -> None:
    if not enabled(level):
        return
    if _state.pending is not None:
        _state.pending.end_line()
    if _state.json:
        import structlog

        getattr(structlog.get_logger(name), level)(event, **fields)
        return
    masked = _masked(None, level, fields)
    _write(render(level, redact.mask(event), masked, color=_state.color))


def _out() -> TextIO:
    return _state.stream if _state.stream is not None else sys.stderr


def _write(text: str) -> None:
    out = _out()
    out.write(text)
    out.flush()


# ---------------------------------------------------------------- the format for people

# How known events read: a template over their fields; a ``seconds`` field is added as
# the duration. Other events read ``event: key=value, ...``.
_TEMPLATES = {
    "pulling the builder": "pulling the builder {image}",
    "pulled": "pulled {image} ({id})",
    "builder ready": "builder {image} ({id})",
    "building in one phase": "building in one phase: {reason}",
    "installing dependencies": "installing dependencies ({files})",
    "dependencies installed": "dependencies installed: layer {image}",
    "dependency layer reused": "dependency layer reused: {image}",
    "source uploaded": "source uploaded",
    "source placed": "source placed: nothing left to run in the application phase",
    "static files placed": (
        "static files placed as collectstatic left them ({inputs} inputs unchanged)"
    ),
    "collectstatic runs": "collectstatic runs again: {path} changed since it last ran",
    "running assemble": "running assemble ({script})",
    "assembled": "assemble done",
    "committed": "committed {image}",
    "pushing": "pushing {image}",
    "pushed": "pushed {image}",
    "wrote the image": "wrote the image to {output} ({megabytes} MB)",
}
_DURATION_COLUMN = 64
_ANSI = {"warning": "\033[33m", "error": "\033[31m", "dim": "\033[2m", "bold": "\033[1m"}
_RESET = "\033[0m"


def render(level: str, event: str, fields: Mapping[str, Any], color: bool = False) -> str:
    """One event as people read it, newline-terminated (a hint on a line of its own)."""
    fields = dict(fields)
    if event == "built":
        return _paint(_built(fields), "bold", color) + "\n"
    hint = fields.pop("hint", None) if level in ("warning", "error") else None
    seconds = fields.pop("seconds", None)
    prefix = {"warning": "WARNING: ", "error": "ERROR: ", "debug": "debug: "}.get(level, "")
    text = prefix + _phrase(event, fields)
    if isinstance(seconds, (int, float)):  # in a column of its own where the line allows
        text = f"{text:<{_DURATION_COLUMN}}" + _paint(f" {seconds:7.2f} s", "dim", color)
    if level == "debug":
        text = _paint(text, "dim", color)
    elif prefix:
        text = _paint(prefix.rstrip(), level, color) + " " + text[len(prefix) :]
    if hint:
        text += f"\n  hint: {hint}"
    return text + "\n"


def _phrase(event: str, fields: dict[str, Any]) -> str:
    template = _TEMPLATES.get(event)
    if template is not None:
        try:
            return template.format_map({k: _value(v) for k, v in fields.items()})
        except (KeyError, ValueError, IndexError):
            pass  # a field is missing: say it all
    if "error" in fields:
        event = f"{event}: {_value(fields.pop('error'))}"
    details = ", ".join(f"{k}={_value(v)}" for k, v in fields.items() if v is not None)
    return f"{event} ({details})" if details else event


def _value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(item) for item in value) or "none"
    return str(value)


def _built(fields: Mapping[str, Any]) -> str:
    """The closing summary: what was built, how big, how long, whether a layer was reused."""
    image = str(fields.get("image", ""))
    name = fields.get("tag") or image
    size = fields.get("size")
    facts = [f"image {image}"] if name != image else []
    if isinstance(size, int) and size > 0:
        facts.append(f"{size / 1e6:.1f} MB")
    seconds = fields.get("seconds")
    if isinstance(seconds, (int, float)):
        facts.append(f"{seconds:.2f} s")
    if fields.get("phases") == 1:
        facts.append("one phase (no dependency layer)")
    else:
        reused = fields.get("dependencies_reused")
        facts.append("dependency layer reused" if reused else "dependency layer installed")
    return f"built {name}: {', '.join(facts)}"


def _paint(text: str, style: str, color: bool) -> str:
    return f"{_ANSI[style]}{text}{_RESET}" if color else text


# ---------------------------------------------------------------- the builder's output


class Lines:
    """Where the builder's output goes (a binary ``Output``): each line set apart as
    ``  | line`` for people, or one ``output`` JSON event per line.

    Output comes in chunks that split lines anywhere; an unfinished line is held until
    its end comes, or until buildpy writes a line of its own (``end_line``).
    """

    def __init__(self) -> None:
        self._partial = b""

    def write(self, data: bytes) -> int:
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self._line(line)
        if len(self._partial) > 64 * 1024:
            self.end_line()
        _state.pending = self if self._partial else None
        return len(data)

    def flush(self) -> None:
        _out().flush()

    def end_line(self) -> None:
        """Pass on the unfinished line, if any."""
        if self._partial:
            self._line(self._partial)
            self._partial = b""
        if _state.pending is self:
            _state.pending = None

    def _line(self, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip("\r")
        if _state.json:
            import structlog

            structlog.get_logger("buildpy.output").info("output", line=line)
        else:
            _write(_paint(OUTPUT_PREFIX, "dim", _state.color) + line + "\n")


def output() -> Lines:
    """A new ``Lines`` for one command's builder output."""
    return Lines()


class _Stderr:
    """Whatever ``sys.stderr`` is when a line is written (it may be replaced after set-up,
    as pytest does for each test)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()
