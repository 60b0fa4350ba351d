"""Build-only files: what assemble reads and the image never holds (the CA bundle, ``--secret``).

Each file is read on the client, before any engine work, and travels to Podman
as a Podman secret: bytes in the body of one API call, so a service reached over
``ssh://`` gets them as easily as a local one, and no host path is ever named
inside a container. Podman copies a secret into the container's own userdata
directory in its storage and mounts it from there, labelled by Podman for that
container, so
nothing of the user's (let alone a system file such as the host's CA bundle) is
ever relabelled for SELinux.

``parse_secret`` reads ``--secret`` the way ``podman build --secret`` does:
``id=NAME,src=FILE`` or ``id=NAME,env=VAR`` (``type=file|env`` with ``src``
as well). The file appears at ``/run/secrets/NAME`` during assemble only.

``BuildSecrets`` is the ``with`` block that owns one build's Podman secrets:
each is named uniquely, and all are removed when the block ends, after
success, failure and Ctrl-C alike.
"""

from __future__ import annotations

import re
import secrets as tokens
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from buildpy.container import cleanup
from buildpy.engine import Engine, SecretMount
from buildpy.errors import UsageError

SECRETS_DIR = "/run/secrets"
MAX_BYTES = 512000 - 1  # Podman 4.3 takes 1 to 511999 bytes per secret
SECRET_SYNTAX = "--secret id=NAME,src=FILE or --secret id=NAME,env=VARIABLE"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_KEYS = ("id", "src", "source", "env", "type")


@dataclass(frozen=True)
class BuildFile:
    """One file assemble sees at ``target`` and the image never holds."""

    origin: str  # where it came from, for messages: "--ca-bundle", "--secret id=token"
    target: str  # absolute path inside the working container
    data: bytes = field(repr=False)


def read_file(path: Path, origin: str, hint: str) -> bytes:
    """A build-only file's bytes, or ``UsageError`` naming ``origin`` when it cannot be used."""
    try:
        data = path.read_bytes() if path.is_file() else None
    except OSError:
        data = None
    if data is None:
        raise UsageError(f"{origin}: {path} is not a readable file", hint)
    return _checked(data, f"{origin}: {path}")


def parse_secret(spec: str, environ: Mapping[str, str]) -> BuildFile:
    """One ``--secret`` argument as a build-only file at /run/secrets/ID."""
    fields = _fields(spec)
    ident = fields.get("id", "")
    if not _ID.fullmatch(ident):
        raise UsageError(
            f"--secret {spec}: the id must be 1-100 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit",
            f"write {SECRET_SYNTAX}",
        )
    origin = f"--secret id={ident}"
    kind = fields.get("type", "env" if "env" in fields else "file")
    source = fields.get("env") or fields.get("src") or fields.get("source") or ""
    if kind not in ("file", "env") or not source or ("env" in fields and kind != "env"):
        raise UsageError(f"--secret {spec}: say where the value comes from", SECRET_SYNTAX)
    if kind == "file":
        data = read_file(Path(source), origin, "give a readable file with src=FILE")
    else:
        data = _checked(environ.get(source, "").encode(), f"{origin}: variable {source}")
    return BuildFile(origin, f"{SECRETS_DIR}/{ident}", data)


def parse_secrets(specs: Iterable[str], environ: Mapping[str, str]) -> tuple[BuildFile, ...]:
    """Every ``--secret``, each id at most once."""
    found: dict[str, BuildFile] = {}
    for spec in specs:
        parsed = parse_secret(spec, environ)
        if parsed.target in found:
            raise UsageError(f"{parsed.origin} is given twice", "give each secret its own id")
        found[parsed.target] = parsed
    return tuple(found.values())


def _fields(spec: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in _KEYS or key in fields:
            raise UsageError(
                f"--secret {spec}: {part!r} is not one of id=, src=, env=, type=, once each",
                SECRET_SYNTAX,
            )
        fields[key] = value
    return fields


def _checked(data: bytes, what: str) -> bytes:
    if not data:
        raise UsageError(f"{what} is empty", "a secret needs at least one byte")
    if len(data) > MAX_BYTES:
        raise UsageError(
            f"{what} has {len(data)} bytes; Podman secrets hold at most {MAX_BYTES}",
            "trim the file (a CA bundle needs only the certificates the build must trust)",
        )
    return data


def reader(user: str) -> tuple[int, int, int]:
    """uid, gid and mode for a build-only file: readable by the builder's user only when
    its uid is numeric (S2I builders' is), else by every user of the working container."""
    name, _, group = user.partition(":")
    if not name:
        return 0, 0, 0o400
    if name.isdigit():
        return int(name), int(group) if group.isdigit() else 0, 0o400
    return 0, 0, 0o444


class BuildSecrets:
    """The Podman secrets carrying one build's files; gone when the ``with`` block ends."""

    def __init__(self, engine: Engine, files: Iterable[BuildFile], user: str) -> None:
        self._engine = engine
        self._files = tuple(files)
        self._user = user
        self._token = tokens.token_hex(6)
        self._made: list[SecretMount] = []

    @property
    def mounts(self) -> tuple[SecretMount, ...]:
        """What every working container mounts (empty until the block is entered)."""
        return tuple(self._made)

    def __enter__(self) -> BuildSecrets:
        uid, gid, mode = reader(self._user)
        try:
            for number, item in enumerate(self._files):
                name = f"buildpy-secret-{self._token}-{number}"
                self._engine.create_secret(name, item.data)
                self._made.append(SecretMount(name, item.target, uid, gid, mode))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        for made in self._made:
            cleanup(
                partial(self._engine.remove_secret, made.name),
                "could not remove a build secret",
                f"remove it with `podman secret rm {made.name}`",
                secret=made.name,
            )
        self._made.clear()
