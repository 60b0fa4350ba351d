"""After the commit: the image written to archive files (``--output``) and pushed (``--push``).

The image is already committed and tagged when this starts, so whatever fails
here leaves it in local storage: the failure is ``PublishFailed`` (exit 10),
whose message names the image. An archive is written next to its final path
and renamed into place only when complete, so a failed or interrupted build
never leaves a partial file under that name.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from buildpy import log
from buildpy.engine import Engine
from buildpy.errors import EngineError, EngineUnavailable, PublishFailed, UsageError

_log = log.get(__name__)

ARCHIVE_FORMATS = ("oci-archive", "docker-archive")


@dataclass(frozen=True)
class ArchiveOutput:
    """``--output FORMAT:PATH``: the image written to a file."""

    format: str
    path: Path

    def __str__(self) -> str:
        return f"{self.format}:{self.path}"


@dataclass(frozen=True)
class Delivery:
    """Where the built image goes besides local storage."""

    outputs: tuple[ArchiveOutput, ...] = ()
    push: bool = False
    tls_verify: bool | None = None


def parse_output(value: str) -> ArchiveOutput:
    """``oci-archive:PATH`` or ``docker-archive:PATH``, its directory existing; or UsageError."""
    kind, sep, path = value.partition(":")
    if not sep or kind not in ARCHIVE_FORMATS or not path:
        raise UsageError(
            f"--output {value}: expected oci-archive:PATH or docker-archive:PATH",
            "oci-archive for skopeo and other OCI tools, docker-archive for `docker load`;"
            " both work with `podman load -i PATH`",
        )
    target = Path(os.path.abspath(os.path.expanduser(path)))
    if target.is_dir():
        raise UsageError(f"--output {value}: {target} is a directory", "name the archive file")
    if not target.parent.is_dir() or not os.access(target.parent, os.W_OK | os.X_OK):
        raise UsageError(
            f"--output {value}: cannot write into {target.parent}",
            "give a path in an existing directory you can write to",
        )
    return ArchiveOutput(kind, target)


def deliver(engine: Engine, delivery: Delivery, image_id: str, tag: str | None) -> None:
    """Write each archive, then push; ``PublishFailed`` says what failed and that the
    image stays in local storage."""
    ref = tag or image_id
    try:
        for output in delivery.outputs:
            _write(engine, ref, output)
        if delivery.push:
            assert tag is not None, "the plan requires --tag with --push"
            _push(engine, tag, delivery.tls_verify)
    except (PublishFailed, EngineError, EngineUnavailable) as exc:
        raise PublishFailed(
            f"{exc.message}; the image is built and kept in local storage as {ref}"
            f" ({image_id[:12]})",
            exc.hint,
        ) from exc


def _write(engine: Engine, ref: str, output: ArchiveOutput) -> None:
    started = time.monotonic()
    try:
        with atomic_file(output.path) as handle:
            engine.save_image(ref, output.format, handle)
    except OSError as exc:
        raise PublishFailed(
            f"could not write {output}: {exc.strerror or exc}",
            "check the free space and permissions of the directory",
        ) from exc
    _log.info(
        "wrote the image",
        output=str(output),
        megabytes=round(output.path.stat().st_size / 1e6, 1),
        seconds=round(time.monotonic() - started, 3),
    )


def _push(engine: Engine, tag: str, tls_verify: bool | None) -> None:
    started = time.monotonic()
    _log.info("pushing", image=tag)
    engine.push(tag, tls_verify, _progress)
    _log.info("pushed", image=tag, seconds=round(time.monotonic() - started, 3))


def _progress(line: str) -> None:
    _log.debug(line)


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A file that appears at ``path`` complete or not at all: written under a hidden
    name beside it, synced, renamed over ``path``; removed on any failure or interrupt."""
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        with open(partial, "xb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
