"""One assemble run: a working container, an upload, assemble, a commit.

Both phases of a build use this step. The working container belongs to a
``with`` block and is removed after success, failure and Ctrl-C alike.

How variables reach assemble: the container's environment (``ContainerSpec.env``)
is committed with it, so only values meant for the image go there. Build-only
values travel in ``/tmp/.buildpy/env`` inside the upload; ``WRAPPER`` sources that
file, deletes it and execs assemble, so the committed layer has no trace of it.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import BinaryIO

from buildpy import environment, log, scripts, source
from buildpy.engine import CommitSpec, ContainerSpec, Engine, ImageInfo
from buildpy.errors import AssembleFailed, BuilderImageError

_log = log.get(__name__)

BUILD_DIR = ".buildpy"  # under /tmp, removed before assemble starts
WRAPPER = (
    f"if [ -f /tmp/{BUILD_DIR}/env ]; then . /tmp/{BUILD_DIR}/env || exit 1; fi; "
    f"if [ -f /tmp/{BUILD_DIR}/in/artifacts.tar ]; then mkdir -p /tmp/artifacts && "
    f"tar -xf /tmp/{BUILD_DIR}/in/artifacts.tar -C /tmp/artifacts || exit 1; fi; "
    f'rm -rf /tmp/{BUILD_DIR}; exec "$@"'
)
TAIL_LINES = 20

# Archive members for /tmp, given the uid and gid that must own them.
ArchiveFactory = Callable[[int, int], Iterator[bytes]]


@dataclass(frozen=True)
class StepTimes:
    """Seconds spent in each part of one assemble run."""

    upload: float
    assemble: float
    commit: float


def container_name(kind: str = "build") -> str:
    """Working containers are named buildpy-*, so leftovers are easy to find."""
    return f"buildpy-{kind}-{secrets.token_hex(6)}"


def assemble_and_commit(
    engine: Engine,
    spec: ContainerSpec,
    user: Owner,
    archives: Sequence[ArchiveFactory],
    commit: CommitSpec,
    out: BinaryIO,
    reaper: Reaper | None = None,
    more_changes: Callable[[Sequence[str]], Sequence[str]] | None = None,
) -> tuple[str, StepTimes]:
    """Create, upload, run assemble, commit; return the image ID and the times taken.

    With a ``reaper``, what it holds is released once assemble's output starts, and
    this container is handed to it afterwards. ``more_changes`` turns the last lines
    of assemble's output into more commit changes.
    """
    with working_container(engine, spec, reaper) as container:
        uid, gid = user.ids(engine, container)
        t0 = time.monotonic()
        for archive in archives:
            engine.upload(container, scripts.UPLOAD_DIR, archive(uid, gid))
        t1 = time.monotonic()
        status, tail = _assemble(engine, container, out, reaper.release if reaper else None)
        t2 = time.monotonic()
        if status != 0:
            raise AssembleFailed(status, tail, _assemble_hint(status))
        if more_changes is not None:
            commit = replace(commit, changes=(*commit.changes, *more_changes(tail)))
        image_id = engine.commit(container, commit)
        t3 = time.monotonic()
    return image_id, StepTimes(t1 - t0, t2 - t1, t3 - t2)


def place_and_commit(
    engine: Engine,
    spec: ContainerSpec,
    user: Owner,
    upload_dir: str,
    archive: ArchiveFactory,
    commit: CommitSpec,
    reaper: Reaper | None = None,
) -> tuple[str, StepTimes]:
    """Upload into a container that never runs, then commit (nothing left for assemble).

    With a ``reaper``, what it holds is released at once, and this container is
    handed to it afterwards.
    """
    if reaper is not None:
        reaper.release()
    with working_container(engine, spec, reaper) as container:
        uid, gid = user.ids(engine, container)
        t0 = time.monotonic()
        engine.upload(container, upload_dir, archive(uid, gid))
        t1 = time.monotonic()
        image_id = engine.commit(container, commit)
        t2 = time.monotonic()
    return image_id, StepTimes(t1 - t0, 0.0, t2 - t1)


def build_env_member(values: Mapping[str, str]) -> list[source.Member]:
    """The build-only variables as the file WRAPPER sources (nothing when there are none)."""
    if not values:
        return []
    script = environment.shell_export_script(values)
    return [source.Member(f"{BUILD_DIR}/env", script.encode(), 0o600)]


@contextmanager
def working_container(
    engine: Engine, spec: ContainerSpec, reaper: Reaper | None = None
) -> Iterator[str]:
    """A container that is gone when the block ends, however it ends.

    With a ``reaper``, a container whose block succeeded is handed to it, to be removed
    off the critical path; otherwise, and after any failure, it is removed at once.
    """
    container = engine.create(spec)
    _log.debug("working container created", container=spec.name, image=spec.image)
    succeeded = False
    try:
        yield container
        succeeded = True
    finally:
        if reaper is not None and succeeded:
            reaper.defer(container, spec.name)
        else:
            _remove(engine, container, spec.name)


class Reaper:
    """Removes finished working containers in the background, when told it may.

    Removing a container that holds a fresh dependency tree takes most of a second
    and holds Podman's storage lock, which stalls the creation of and the upload to
    the next container. So removals wait until ``release()`` (the next container is
    running, or needs no run), then go on in a background thread; leaving the
    ``with`` block, however it is left, releases what is pending and waits for all.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._pending: list[tuple[str, str | None]] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="buildpy-reaper")

    def __enter__(self) -> Reaper:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
        self._pool.shutdown(wait=True)

    def defer(self, container: str, name: str | None) -> None:
        self._pending.append((container, name))

    def release(self) -> None:
        for container, name in self._pending:
            self._pool.submit(_remove, self._engine, container, name)
        self._pending.clear()


def _remove(engine: Engine, container: str, name: str | None) -> None:
    try:
        engine.remove(container)
    except Exception as exc:  # never mask the build's own error
        _log.warning(
            "could not remove the working container",
            container=name,
            error=str(exc),
            hint=f"remove it with `podman rm -f {name}`",
        )


class Owner:
    """The numeric uid and gid of the builder's user, looked up at most once per build.

    The lookup reads /etc/passwd out of a working container (about 0.13 s), so a
    build does it once for both phases, and a dependency image records the answer
    (``label()``) for the rebuilds made on top of it (``learn()``).
    """

    def __init__(self, builder: ImageInfo) -> None:
        self._builder = builder
        self._ids: tuple[int, int] | None = None

    def learn(self, known: str | None) -> None:
        """Take the ids recorded by an earlier build, when they are well formed."""
        self._ids = _parse_ids(known) or self._ids

    def ids(self, engine: Engine, container: str) -> tuple[int, int]:
        if self._ids is None:
            self._ids = owner(engine, container, self._builder)
        return self._ids

    def label(self) -> str | None:
        """``uid:gid`` once known."""
        return None if self._ids is None else f"{self._ids[0]}:{self._ids[1]}"


def _parse_ids(text: str | None) -> tuple[int, int] | None:
    uid, sep, gid = (text or "").partition(":")
    if sep and uid.isdigit() and gid.isdigit():
        return int(uid), int(gid)
    return None


def owner(engine: Engine, container: str, builder: ImageInfo) -> tuple[int, int]:
    """Numeric uid and gid of the builder's user, for the uploaded files."""
    name, _, group = builder.user.partition(":")
    if not name:
        return 0, 0
    if name.isdigit() and group.isdigit():
        return int(name), int(group)
    entry = _passwd_entry(engine, container, name)
    if entry is None:
        if name.isdigit():
            return int(name), 0  # an arbitrary UID without an entry runs with group 0
        raise BuilderImageError(
            f"builder image {builder.ref} runs as user {builder.user!r}, which /etc/passwd lacks",
            "use a numeric USER (e.g. 1001) in the builder image",
        )
    uid, gid = entry
    return uid, int(group) if group.isdigit() else gid


def _passwd_entry(engine: Engine, container: str, user: str) -> tuple[int, int] | None:
    """(uid, gid) of a user, by name or uid, from the container's /etc/passwd."""
    passwd = engine.read_file(container, "/etc/passwd") or b""
    for line in passwd.decode(errors="replace").splitlines():
        fields = line.split(":")
        known = len(fields) >= 4 and fields[2].isdigit() and fields[3].isdigit()
        if known and user in (fields[0], fields[2]):
            return int(fields[2]), int(fields[3])
    return None


def _assemble(
    engine: Engine, container: str, out: BinaryIO, started: Callable[[], None] | None = None
) -> tuple[int, list[str]]:
    """Start assemble, stream its output to ``out``, return its status and last lines.

    ``started`` is called once, when the first output arrives (assemble is running).
    """
    tail = _Tail(TAIL_LINES)

    def output(chunk: bytes) -> None:
        nonlocal started
        if started is not None:
            call = started
            started = None
            call()
        out.write(chunk)
        out.flush()
        tail.feed(chunk)

    return engine.run(container, output), tail.lines()


def _assemble_hint(status: int) -> str:
    if status in (126, 127):
        return "the assemble script could not be executed: check it exists and is executable"
    if status in (137, 143):
        return "assemble was killed (out of memory, or stopped from outside)"
    return "fix the error shown above in the assemble output, then build again"


class _Tail:
    """The last ``size`` lines of a byte stream, decoded for an error message."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._lines: deque[str] = deque(maxlen=size)
        self._partial = b""

    def feed(self, chunk: bytes) -> None:
        data = self._partial + chunk
        *complete, self._partial = data.split(b"\n")
        for line in complete:
            self._lines.append(line.decode(errors="replace").rstrip("\r"))
        if len(self._partial) > 64 * 1024:
            self._lines.append(self._partial.decode(errors="replace"))
            self._partial = b""

    def lines(self) -> list[str]:
        lines = list(self._lines)
        if self._partial:
            lines.append(self._partial.decode(errors="replace"))
        return lines[-self._size :]


def usage(engine: Engine, ref: str) -> str:
    """What the builder's usage script prints (S2I's `s2i usage`)."""
    builder = engine.image(ref)
    chosen = scripts.image_scripts_dir(builder.labels, ref)
    if chosen is None:
        raise BuilderImageError(
            f"{ref} has no io.openshift.s2i.scripts-url label, so it has no usage script",
            "is it an S2I builder image?",
        )
    spec = ContainerSpec(
        image=builder.id,
        command=(f"{chosen}/usage",),
        user=builder.user,
        name=container_name("usage"),
    )
    with working_container(engine, spec) as container:
        chunks: list[bytes] = []
        status = engine.run(container, chunks.append)
        text = b"".join(chunks)
    if status != 0:
        raise BuilderImageError(f"{ref}'s usage script exited with status {status}")
    return text.decode(errors="replace")
