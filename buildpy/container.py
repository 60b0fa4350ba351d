"""The working container: created, given files, run, committed, removed.

A ``WorkingContainer`` is the one object a build step holds. It is a ``with``
block: the container is gone when the block ends, after success, failure and
Ctrl-C alike (a container whose block succeeded may be handed to a ``Reaper``,
which removes it off the critical path). Its methods are the steps S2I takes:
``upload`` (source, scripts, build-only files), ``assemble`` (which returns the
status, the last lines of output and the time taken), ``commit``.

How variables reach assemble: the container's environment (``ContainerSpec.env``)
is committed with it, so only values meant for the image go there. Build-only
values travel in ``/tmp/.buildpy/env`` inside the upload; ``WRAPPER`` sources that
file, deletes it and execs assemble, so the committed layer has no trace of it.
"""

from __future__ import annotations

import functools
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from buildpy import environment, leftovers, log, redact, source
from buildpy.background import Running
from buildpy.engine import CommitSpec, ContainerSpec, Engine, ImageInfo
from buildpy.errors import AssembleFailed, BuilderImageError, EngineError, IndexUnreachable

_log = log.get(__name__)

BUILD_DIR = ".buildpy"  # under /tmp, removed before assemble starts
WRAPPER = (
    f"if [ -f /tmp/{BUILD_DIR}/env ]; then . /tmp/{BUILD_DIR}/env || exit 1; fi; "
    f"if [ -f /tmp/{BUILD_DIR}/in/artifacts.tar ]; then mkdir -p /tmp/artifacts && "
    f"tar -xf /tmp/{BUILD_DIR}/in/artifacts.tar -C /tmp/artifacts || exit 1; fi; "
    f'rm -rf /tmp/{BUILD_DIR}; exec "$@"'
)
TAIL_LINES = 20
MARKER = b"BUILDPY_"  # assemble's lines to buildpy start so (BUILDPY_APPLICATION_PHASE=copy)
INDEX_MARKER = "BUILDPY_UNREACHABLE_INDEX"  # assemble: this index (masked) does not answer


class Output(Protocol):
    """Where assemble's output goes (a binary stream: stderr's buffer, a file, a test sink)."""

    def write(self, data: bytes, /) -> object: ...

    def flush(self) -> object: ...


# Archive members, given the uid and gid that must own them.
ArchiveFactory = Callable[[int, int], "Iterable[bytes] | source.SplitArchive"]


def build_env_member(values: Mapping[str, str]) -> list[source.Member]:
    """The build-only variables as the file WRAPPER sources (nothing when there are none)."""
    if not values:
        return []
    script = environment.shell_export_script(values)
    return [source.Member(f"{BUILD_DIR}/env", script.encode(), 0o600)]


@dataclass(frozen=True)
class Assembled:
    """What one assemble run gave: its exit status, its last lines, its duration."""

    status: int
    tail: tuple[str, ...]
    seconds: float

    def check(self) -> Assembled:
        """This result, or ``AssembleFailed`` when assemble did not exit 0."""
        if self.status != 0:
            shown = [line for line in self.tail if not line.startswith(MARKER.decode())]
            index = self.said(INDEX_MARKER)
            if index is not None:
                raise IndexUnreachable(self.status, shown, redact.mask(index))
            raise AssembleFailed(self.status, shown, _assemble_hint(self.status))
        return self

    def said(self, name: str) -> str | None:
        """The value of the last ``NAME=value`` line assemble printed, if any."""
        for line in reversed(self.tail):
            if line.startswith(f"{name}="):
                return line.split("=", 1)[1].strip()
        return None


@dataclass(frozen=True)
class Committed:
    image_id: str
    seconds: float


class WorkingContainer:
    """One container a build works in, removed when its ``with`` block ends.

    ``owner`` gives the uid and gid uploads are owned by (the builder's user);
    with a ``reaper``, a container whose block succeeded is removed by it later,
    and what the reaper holds is released as soon as this container's assemble
    is running.
    """

    def __init__(
        self,
        engine: Engine,
        spec: ContainerSpec,
        owner: Owner | None = None,
        reaper: Reaper | None = None,
    ) -> None:
        self._engine = engine
        self.spec = spec
        self._owner = owner or Owner.root()
        self._reaper = reaper
        self._id: str | None = None
        self._named: tuple[str, Running[ImageInfo | None]] | None = None  # will_commit's

    @property
    def id(self) -> str:
        if self._id is None:
            raise RuntimeError("the working container is used outside its with block")
        return self._id

    def __enter__(self) -> WorkingContainer:
        self._id = self._engine.create(self.spec)
        _log.debug("working container created", container=self.spec.name, image=self.spec.image)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._reaper is not None and kind is None:
            self._reaper.defer(self.id, self.spec.name)
        else:
            remove_quietly(self._engine, self.id, self.spec.name)

    def upload(self, path: str, archive: ArchiveFactory) -> float:
        """Stream an archive into ``path``, owned by the builder's user; return the seconds."""
        started = time.monotonic()
        uid, gid = self._owner.ids(self._engine, self.id)
        stream = archive(uid, gid)
        streams = 1
        if isinstance(stream, source.SplitArchive):
            self._upload_split(path, stream)
            streams = len(stream.parts) + 1
        else:
            self._engine.upload(self.id, path, stream)
        seconds = time.monotonic() - started
        stats = getattr(stream, "stats", None)  # a TarStream's or SplitArchive's, once read
        if isinstance(stats, source.SourceStats):
            _log.debug(
                "uploaded",
                path=path,
                files=stats.files,
                bytes=stats.bytes,
                streams=streams,
                seconds=round(seconds, 3),
            )
        return seconds

    def _upload_split(self, path: str, split: source.SplitArchive) -> None:
        """The parts at once, each on a connection of its own (the first on this thread),
        then the stream that goes after them. When one part fails (or Ctrl-C comes), the
        others are cut short at their next chunk, and once all have ended the first
        failure is raised (not the others' UploadStopped), so nothing still writes into
        the container when it is removed."""

        def send(part: source.TarStream) -> None:
            try:
                self._engine.upload(self.id, path, part)
            except BaseException:
                split.stop()  # at once, from the thread that failed
                raise

        first, *rest = split.parts
        others = [Running(functools.partial(send, part), "buildpy-upload") for part in rest]
        waits: list[Callable[[], None]] = [functools.partial(send, first)]
        waits += [other.result for other in others]
        errors: list[BaseException] = []
        for wait in waits:
            try:
                wait()
            except BaseException as exc:  # Ctrl-C too: raised once the others have ended
                errors.append(exc)
                split.stop()
        if errors:
            raise next((e for e in errors if not isinstance(e, source.UploadStopped)), errors[0])
        self._engine.upload(self.id, path, split.last())

    def assemble(self, out: Output) -> Assembled:
        """Run the container's command, stream its output to ``out``, say how it ended.

        Credentials in URLs are masked (``redact``) before anything is shown or kept.
        """
        started = time.monotonic()
        tail = _Tail(TAIL_LINES)
        shown = _Unmarked(out)
        masker = redact.LineMasker()

        def show(data: bytes) -> None:
            if data:
                shown.feed(data)
                tail.feed(data)

        def output(chunk: bytes) -> None:
            if self._reaper is not None:
                self._reaper.release()  # assemble is running: earlier removals may go on
            show(masker.feed(chunk))

        status = self._engine.run(self.id, output)
        show(masker.flush())
        shown.close()
        return Assembled(status, tuple(tail.lines()), time.monotonic() - started)

    def will_commit(self, spec: CommitSpec) -> None:
        """Say how the container will be committed, before the uploads: the image the
        commit's name names now (given the name back if the build is stopped during the
        commit) is looked up meanwhile, on a thread of its own, so ``commit`` need not
        ask first."""
        ref = _commit_ref(spec)
        if ref is not None:
            self._named = (ref, Running(lambda: self._engine.find_image(ref), "buildpy-lookup"))

    def commit(self, spec: CommitSpec) -> Committed:
        """Commit the container as an image.

        The service finishes a commit whatever happens to the client, so a Ctrl-C,
        SIGTERM or ``--timeout`` meanwhile gives the commit up to ``COMMIT_GRACE``
        seconds more and then undoes it: the new image goes, and the tag names the
        image it named before. A stopped build changes nothing (unless the service
        hangs: then the build stops anyway, and says so).
        """
        started = time.monotonic()
        ref = _commit_ref(spec)
        before = self._named_before(ref)
        with _signals_held(said=None) as held:
            image_id = _finish_within_grace(lambda: self._engine.commit(self.id, spec), held)
            if held:
                _undo_commit(self._engine, image_id, ref, before)
        assert image_id is not None  # a build that gave up on its commit was stopped above
        return Committed(image_id, time.monotonic() - started)

    def _named_before(self, ref: str | None) -> ImageInfo | None:
        """What ``ref`` names before the commit: ``will_commit``'s answer, else asked now."""
        if ref is None:
            return None
        if self._named is not None and self._named[0] == ref:
            return self._named[1].result()
        return self._engine.find_image(ref)

    def run_quietly(self) -> tuple[int, bytes]:
        """Run the container's command and collect its output (for short helper runs)."""
        chunks: list[bytes] = []
        status = self._engine.run(self.id, chunks.append)
        return status, b"".join(chunks)


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

    def sweep(self) -> None:
        """Remove, in the background, what builds killed outright left behind."""
        self._pool.submit(leftovers.sweep, self._engine)
        self._pool.submit(leftovers.sweep_dirs)

    def __exit__(self, *exc_info: object) -> None:
        with _signals_held():  # a second Ctrl-C must not cut the removals short
            self.release()
            self._pool.shutdown(wait=True)

    def defer(self, container: str, name: str | None) -> None:
        self._pending.append((container, name))

    def background(self, action: Callable[[], object], failed: str) -> None:
        """Run ``action`` on the reaper's thread, after what it was given before: work the
        build need not wait for (bookkeeping), done by the time the ``with`` block ends.
        Its failure is the warning ``failed``, never the build's."""
        self._pool.submit(cleanup, action, failed, "nothing to do: later builds record it")

    def release(self) -> None:
        """Let the pending removals go on (cheap, and nothing to do, when none is pending)."""
        for container, name in self._pending:
            self._pool.submit(remove_quietly, self._engine, container, name)
        self._pending.clear()


def remove_quietly(engine: Engine, container: str, name: str | None) -> None:
    """Remove a container; a failure is a warning, never a mask over the build's own error.

    A second Ctrl-C (or SIGTERM) while this runs is held back until the removal is done:
    cut short, it would leave the container behind, stopping.
    """
    cleanup(
        lambda: engine.remove(container),
        "could not remove the working container",
        f"remove it with `podman rm -f {name}`",
        container=name,
    )


def cleanup(action: Callable[[], object], failed: str, hint: str, **fields: str | None) -> None:
    """Run a clean-up step, with interrupts held back until it is done; its failure is a
    warning (``failed``, with the error, ``hint`` and ``fields``), never an exception that
    would mask the build's own error."""
    try:
        with _signals_held():
            action()
    except Exception as exc:
        _log.warning(failed, error=str(exc), hint=hint, **fields)


def _commit_ref(spec: CommitSpec) -> str | None:
    """The name a commit gives, in full (``latest`` when it has no tag); None: no name."""
    return f"{spec.repository}:{spec.tag or 'latest'}" if spec.repository else None


COMMIT_GRACE = 10.0  # seconds a commit may still take once the build is stopped


def _finish_within_grace(call: Callable[[], str], held: list[int]) -> str | None:
    """``call``'s result; None when a signal was held and it took COMMIT_GRACE more seconds
    (it runs on a daemon thread, so a hung service never keeps this process alive)."""
    result: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # handed to the caller
            errors.append(exc)

    worker = threading.Thread(target=work, name="buildpy-commit", daemon=True)
    worker.start()
    deadline: float | None = None
    while worker.is_alive():
        worker.join(0.05)
        if held and deadline is None:
            deadline = time.monotonic() + COMMIT_GRACE
        if deadline is not None and time.monotonic() > deadline:
            return None
    if errors:
        raise errors[0]
    return result[0]


def _undo_commit(
    engine: Engine, image_id: str | None, ref: str | None, before: ImageInfo | None
) -> None:
    """Remove a commit the build was stopped during, and give the tag back."""
    if image_id is None:
        _log.warning(
            f"stopped during the commit, which did not end within {COMMIT_GRACE:g} s;"
            " its image may still appear",
            hint="look for it with `podman images` and remove it",
        )
        return
    _log.warning("stopped during the commit: its image was removed")
    try:
        engine.remove_image(image_id, force=True)
        if ref is not None and before is not None and before.id != image_id:
            engine.tag(before.id, ref)
    except Exception as exc:
        _log.warning(
            "could not undo the commit of a stopped build", image=image_id[:12], error=str(exc)
        )


@contextmanager
def _signals_held(
    said: str | None = "stopped again: the working container was removed first",
) -> Iterator[list[int]]:
    """Hold SIGINT, SIGTERM and SIGALRM (``--timeout``) back for the block, then deliver
    them (after warning ``said``, if given); the block sees the ones held so far. Only
    the main thread gets signals, so elsewhere this holds nothing."""
    held: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield held
        return
    previous = {
        number: signal.signal(number, lambda signum, frame: held.append(signum))
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)
    }
    try:
        yield held
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if held:
        if said:
            _log.warning(said)
        signal.raise_signal(held[0])


class Owner:
    """The numeric uid and gid of the builder's user, looked up at most once per build.

    The lookup reads /etc/passwd out of a working container (about 0.13 s), so a
    build does it once for both phases, and a dependency image records the answer
    (``label()``) for the rebuilds made on top of it (``learn()``).
    """

    def __init__(self, builder: ImageInfo) -> None:
        self._builder = builder
        self._ids: tuple[int, int] | None = None

    @classmethod
    def root(cls) -> Owner:
        known = cls(ImageInfo(id="", ref=""))
        known._ids = (0, 0)
        return known

    def learn(self, known: str | None) -> None:
        """Take the ids recorded by an earlier build, when they are well formed."""
        self._ids = _parse_ids(known) or self._ids

    def ids(self, engine: Engine, container: str) -> tuple[int, int]:
        if self._ids is None:
            self._ids = _lookup(engine, container, self._builder)
        return self._ids

    def label(self) -> str | None:
        """``uid:gid`` once known."""
        return None if self._ids is None else f"{self._ids[0]}:{self._ids[1]}"


def _parse_ids(text: str | None) -> tuple[int, int] | None:
    uid, sep, gid = (text or "").partition(":")
    if sep and uid.isdigit() and gid.isdigit():
        return int(uid), int(gid)
    return None


def _lookup(engine: Engine, container: str, builder: ImageInfo) -> tuple[int, int]:
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
    """(uid, gid) of a user, by name or uid, from the container's /etc/passwd.

    Podman resolves the container's user before it copies anything out of it, so for a
    user /etc/passwd lacks the copy itself fails: that is the same answer, "no entry".
    """
    try:
        passwd = engine.read_file(container, "/etc/passwd") or b""
    except EngineError as exc:
        if "unknown user" in exc.message:
            return None
        raise
    for line in passwd.decode(errors="replace").splitlines():
        fields = line.split(":")
        known = len(fields) >= 4 and fields[2].isdigit() and fields[3].isdigit()
        if known and user in (fields[0], fields[2]):
            return int(fields[2]), int(fields[3])
    return None


def _assemble_hint(status: int) -> str:
    if status in (126, 127):
        return "the assemble script could not be executed: check it exists and is executable"
    if status in (137, 143):
        return "assemble was killed (out of memory, or stopped from outside)"
    return "fix the error shown above in the assemble output, then build again"


class _Unmarked:
    """Passes assemble's output on, without the lines addressed to buildpy (``MARKER``…=).

    Output arrives in chunks that split lines anywhere, so the start of a line that may
    still become a marker is held back until its end shows what it is.
    """

    def __init__(self, out: Output) -> None:
        self._out = out
        self._held = b""  # the start of a line that may be a marker
        self._in_marker = False  # within a marker line: nothing is passed on until its end
        self._mid_line = False  # the last byte passed on was not a newline

    def feed(self, chunk: bytes) -> None:
        data, self._held = self._held + chunk, b""
        if self._in_marker:  # (a long one, such as collectstatic's record, is not copied)
            end = data.find(b"\n")
            if end < 0:
                return
            data, self._in_marker = data[end + 1 :], False
        *lines, last = data.split(b"\n")
        shown = bytearray()
        for line in lines:
            if self._mid_line or not line.startswith(MARKER):
                shown += line + b"\n"
            self._mid_line = False
        if not self._mid_line and last.startswith(MARKER):
            self._in_marker = True
        elif not self._mid_line and MARKER.startswith(last):
            self._held = last
        else:
            shown += last
            self._mid_line = self._mid_line or bool(last)
        if shown:
            self._out.write(bytes(shown))
            self._out.flush()

    def close(self) -> None:
        """The end of the output: a held line that is no marker is passed on."""
        if self._held and not self._held.startswith(MARKER):
            self._out.write(self._held)
            self._out.flush()
        self._held = b""


class _Tail:
    """The last ``size`` lines of a byte stream, decoded for an error message and for the
    lines addressed to buildpy (``MARKER``). A line goes in cut at ``LINE_LIMIT`` bytes
    (output for people; memory stays bounded), a marker line whole up to ``MARKER_LIMIT``
    (collectstatic's record names every file it read: thousands for a large project)."""

    LINE_LIMIT = 64 * 1024
    MARKER_LIMIT = 16 * 1024 * 1024

    def __init__(self, size: int) -> None:
        self._size = size
        self._lines: deque[str] = deque(maxlen=size)
        self._pieces: list[bytes] = []  # the line not ended yet, as it came (no copies)
        self._pending = 0  # its length

    def feed(self, chunk: bytes) -> None:
        *complete, rest = chunk.split(b"\n")
        for line in complete:
            self._add(b"".join([*self._pieces, line]))
            self._pieces, self._pending = [], 0
        if rest:
            self._pieces.append(rest)
            self._pending += len(rest)
        if self._pending > self.LINE_LIMIT and (
            self._pending > self.MARKER_LIMIT or not self._marker_line()
        ):
            self._add(b"".join(self._pieces))
            self._pieces, self._pending = [], 0

    def _add(self, line: bytes) -> None:
        self._lines.append(line.decode(errors="replace").rstrip("\r"))

    def _marker_line(self) -> bool:
        head = b""
        for piece in self._pieces:
            head += piece[: len(MARKER)]
            if len(head) >= len(MARKER):
                break
        return head.startswith(MARKER)

    def lines(self) -> list[str]:
        lines = list(self._lines)
        if self._pieces:
            lines.append(b"".join(self._pieces).decode(errors="replace"))
        return lines[-self._size :]
