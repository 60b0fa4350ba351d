"""Build variables: parse env files and ``-e`` arguments, and merge them by precedence.

Sources, lowest to highest precedence (the value closest to the user wins):

1. the builder image's own ``ENV``;
2. ``.s2i/environment`` in the source;
3. each ``--env-file``, in command-line order;
4. each ``-e KEY=VALUE``, in command-line order.

Env file format (one ``KEY=VALUE`` per line, deliberately small):

* a UTF-8 byte order mark at the start is dropped; lines end with LF or CRLF
  (a ``\\r`` right before ``\\n`` belongs to the line ending, any other ``\\r`` is data);
* blank lines and lines whose first non-blank character is ``#`` are skipped;
* leading spaces/tabs are allowed, then ``KEY=VALUE`` with ``KEY`` matching
  ``[A-Za-z_][A-Za-z0-9_]*``;
* ``VALUE`` is everything after the first ``=``, trailing whitespace included;
* spaces or tabs around ``=`` (``KEY = value``) are trimmed, as s2i trims them, and
  ``warn`` is told (a value that starts with a space must be quoted);
* one level of matching ``'...'`` or ``"..."`` quotes is stripped; there are no escapes
  and no ``$VAR`` expansion;
* if a key appears twice in one file the later line wins (``warn`` is told).

Each layer keeps the line each of its keys was read from (``EnvLayer.lines``), so that
``buildpy plan`` can say where a value came from.

Nothing here does I/O except :func:`read_env_file`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from buildpy.errors import EnvFileError

__all__ = [
    "EnvLayer",
    "Resolved",
    "merge",
    "origins",
    "parse_assignment",
    "parse_env_layer",
    "parse_env_text",
    "read_env_file",
    "read_env_layer",
    "render_env_text",
    "resolve",
    "shell_export_script",
]

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# MAX_ARG_STRLEN: one argument or KEY=value string, with its NUL, must fit in 32 pages.
MAX_VARIABLE_BYTES = 128 * 1024
_BLANK = " \t"
_QUOTES = "'\""
_KEY_HINT = "a key is letters, digits and underscores, and does not start with a digit"
_NUL_HINT = (
    "remove it: no variable can hold a NUL byte (a file saved as UTF-16 is full of"
    " them: save it as UTF-8)"
)


@dataclass(frozen=True)
class EnvLayer:
    """One source of variables, e.g. ``EnvLayer("-e", {...})``; ``origin`` is for humans.

    ``lines`` gives, for a file, the line each key's value was read from.
    """

    origin: str
    values: Mapping[str, str]
    lines: Mapping[str, int] = field(default_factory=dict)


def _is_key(text: str) -> bool:
    return _KEY.fullmatch(text) is not None


def _key_problem(key: str) -> tuple[str, str]:
    """Explain why ``key`` (the text before the first ``=``) is not a valid key."""
    words = key.split()
    if len(words) == 2 and words[0] == "export" and _is_key(words[1]):
        return "'export' is not supported", f"drop 'export': write {words[1]}=VALUE"
    if key and key.rstrip(_BLANK) != key and _is_key(key.rstrip(_BLANK)):
        return "space before '='", "write KEY=VALUE without spaces around '='"
    if not key:
        return "missing key before '='", "write KEY=VALUE"
    if key[0].isdigit():
        return f"key {key!r} starts with a digit", _KEY_HINT
    bad = next(c for c in key if not (c == "_" or (c.isascii() and c.isalnum())))
    return f"key {key!r} contains {bad!r}, which is not allowed in a key", _KEY_HINT


def _unquote(value: str) -> str | None:
    """Strip one level of matching quotes; None if a quote is left unmatched."""
    if not value or value[0] not in _QUOTES:
        return value
    if len(value) >= 2 and value[-1] == value[0]:
        return value[1:-1]
    return None


def _parse_line(
    body: str, origin: str, lineno: int, warn: Callable[[str], None] | None
) -> tuple[str, str]:
    """Parse a non-blank, non-comment line (leading blanks removed) into (key, value)."""
    if "=" not in body and "\0" in body:
        raise EnvFileError(origin, lineno, "the line contains a NUL character", _NUL_HINT)
    if "=" not in body:
        raise EnvFileError(
            origin,
            lineno,
            "expected KEY=VALUE, found no '='",
            "write KEY=VALUE, or start the line with '#' to make it a comment",
        )
    key, value = body.split("=", 1)
    if "\0" in key:
        raise EnvFileError(origin, lineno, "the line contains a NUL character", _NUL_HINT)
    key, value = _trim_around_equals(key, value, f"{origin}, line {lineno}", warn)
    if not _is_key(key):
        raise EnvFileError(origin, lineno, *_key_problem(key))
    unquoted = _unquote(value)
    if unquoted is None:
        quote = value[0]
        hint = f"end the value with {quote}"
        stripped = value.rstrip(_BLANK)
        if len(stripped) >= 2 and stripped.endswith(quote):
            hint = f"remove the whitespace after the closing {quote}"
        raise EnvFileError(origin, lineno, f"unmatched quote {quote} in the value of {key}", hint)
    if "\0" in unquoted:
        raise EnvFileError(
            origin, lineno, f"the value of {key} contains a NUL character", _NUL_HINT
        )
    _check_size(key, unquoted, origin, lineno)
    return key, unquoted


def _trim_around_equals(
    key: str, value: str, where: str, warn: Callable[[str], None] | None
) -> tuple[str, str]:
    """``KEY = value`` as s2i reads it: blanks around ``=`` trimmed, with a warning.

    The value is never part of the warning: it may be a credential.
    """
    trimmed = key.rstrip(_BLANK)
    if (trimmed == key and value[:1] not in (" ", "\t")) or not _is_key(trimmed):
        return key, value
    if warn is not None:
        warn(
            f"{where}: spaces around '=' are trimmed (as s2i does); write {trimmed}=VALUE,"
            " and quote a value that starts with a space"
        )
    return trimmed, value.lstrip(_BLANK)


def _check_size(key: str, value: str, origin: str, lineno: int | None) -> None:
    """Linux refuses to start a process with a ``KEY=value`` string over 128 KiB."""
    size = len(key.encode()) + 1 + len(value.encode("utf-8", "surrogateescape"))
    if size >= MAX_VARIABLE_BYTES:
        raise EnvFileError(
            origin,
            lineno,
            f"{key} is {size} bytes long; Linux starts no process with a variable of"
            f" {MAX_VARIABLE_BYTES // 1024} KiB or more",
            "pass large data as a file in the source (or with --secret), not as a variable",
        )


def parse_env_text(
    text: str, origin: str, *, warn: Callable[[str], None] | None = None
) -> dict[str, str]:
    """Parse the text of one env file into its values (see ``parse_env_layer``)."""
    return dict(parse_env_layer(text, origin, warn=warn).values)


def parse_env_layer(
    text: str, origin: str, *, warn: Callable[[str], None] | None = None
) -> EnvLayer:
    """Parse the text of one env file; errors name ``origin`` and the 1-based line.

    Duplicate keys: the later line wins (keeping the first line's position) and
    ``warn`` is called, if given. The layer's ``lines`` say which line each value is from.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    result: dict[str, str] = {}
    seen: dict[str, int] = {}
    lines = text.split("\n")
    for lineno, line in enumerate(lines, start=1):
        if lineno < len(lines) and line.endswith("\r"):
            line = line[:-1]  # CRLF; a CR not followed by LF is data
        body = line.lstrip(_BLANK)
        if not body or body.startswith("#"):
            continue
        key, value = _parse_line(body, origin, lineno, warn)
        if key in seen and warn is not None:
            warn(
                f"{origin}, line {lineno}: {key} was already set on line {seen[key]}; "
                "the later value wins"
            )
        seen[key] = lineno
        result[key] = value
    return EnvLayer(origin, result, seen)


def read_env_file(
    path: Path, origin: str | None = None, *, warn: Callable[[str], None] | None = None
) -> dict[str, str]:
    """Read and parse an env file into its values (see ``read_env_layer``)."""
    return dict(read_env_layer(path, origin, warn=warn).values)


def read_env_layer(
    path: Path, origin: str | None = None, *, warn: Callable[[str], None] | None = None
) -> EnvLayer:
    """Read and parse an env file (strict UTF-8); ``origin`` defaults to ``str(path)``."""
    where = str(path) if origin is None else origin
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise EnvFileError(
            where, None, f"cannot read: {reason}", "check the path and the file's permissions"
        ) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise EnvFileError(
            where,
            line,
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x})",
            "save the file as UTF-8",
        ) from exc
    return parse_env_layer(text, where, warn=warn)


def parse_assignment(arg: str, origin: str) -> tuple[str, str]:
    """Parse one ``-e KEY=VALUE`` argument; the value is kept verbatim (no unquoting).

    ``origin`` starts with the option's name (``-e``, ``--build-env``)."""
    option = origin.split(" ", 1)[0]
    if "=" not in arg:
        raise EnvFileError(
            origin, None, f"expected KEY=VALUE, got {arg!r}", f"write {option} KEY=VALUE"
        )
    key, value = arg.split("=", 1)
    if not _is_key(key):
        problem, hint = _key_problem(key)
        raise EnvFileError(origin, None, problem, hint)
    _check_size(key, value, origin, None)
    return key, value


def merge(*layers: Mapping[str, str]) -> dict[str, str]:
    """Merge layers, later ones winning; keys keep the order of their first appearance."""
    merged: dict[str, str] = {}
    for layer in layers:
        merged.update(layer)
    return merged


@dataclass(frozen=True)
class Resolved:
    """A variable's winning value, the layer it came from and, for a file, the line."""

    value: str
    origin: str
    line: int | None = None

    @property
    def place(self) -> str:
        """Where the value comes from, for people: ``.s2i/environment line 3``, ``-e``."""
        return self.origin if self.line is None else f"{self.origin} line {self.line}"


def resolve(layers: Sequence[EnvLayer]) -> dict[str, Resolved]:
    """Map each key to its value, origin and line in the last layer that sets it."""
    resolved: dict[str, Resolved] = {}
    for layer in layers:
        for key, value in layer.values.items():
            resolved[key] = Resolved(value, layer.origin, layer.lines.get(key))
    return resolved


def origins(layers: Sequence[EnvLayer]) -> dict[str, tuple[str, str]]:
    """Map each key to ``(value, origin)`` of the last layer that sets it."""
    return {key: (found.value, found.origin) for key, found in resolve(layers).items()}


def _check_key(key: str) -> None:
    if not _is_key(key):
        raise ValueError(f"invalid variable name {key!r}")


def _render_value(value: str) -> str:
    """The text after ``=`` that :func:`parse_env_text` reads back as ``value``."""
    if "\n" in value or "\0" in value:
        raise ValueError(f"value {value!r} cannot be written to an env file (newline or NUL)")
    needs_quotes = value[:1] in (" ", "\t", "'", '"') or value.endswith("\r")
    if not needs_quotes:
        return value
    # No escapes exist: stripping one outer pair gives back the inside, whatever it holds.
    quote = "'" if '"' in value and "'" not in value else '"'
    return f"{quote}{value}{quote}"


def render_env_text(values: Mapping[str, str]) -> str:
    """Write ``values`` as env file text that parses back to the same dict.

    Kept although no build step writes env files yet: it is the exact inverse of
    ``parse_env_text``, which the round-trip property tests rely on, and what an
    exported build (``--as-containerfile``) will write.

    Raises ValueError for invalid keys and for values holding a newline or NUL.
    """
    lines = []
    for key, value in values.items():
        _check_key(key)
        lines.append(f"{key}={_render_value(value)}\n")
    return "".join(lines)


def _sh_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def shell_export_script(values: Mapping[str, str]) -> str:
    """A POSIX sh snippet of ``export KEY='value'`` lines reproducing ``values`` exactly.

    Raises ValueError for invalid keys and for values holding NUL (no env var can).
    """
    lines = []
    for key, value in values.items():
        _check_key(key)
        if "\0" in value:
            raise ValueError(f"the value of {key} contains NUL, which a variable cannot hold")
        lines.append(f"export {key}={_sh_quote(value)}\n")
    return "".join(lines)
