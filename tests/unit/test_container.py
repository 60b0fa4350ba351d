"""The working container: what the user sees of assemble, and the reaper's background work."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fakes import FakeEngine
from hypothesis import given
from hypothesis import strategies as st

from buildpy import log, source
from buildpy.container import Assembled, Reaper, WorkingContainer, _Tail, _Unmarked
from buildpy.engine import ContainerSpec
from buildpy.errors import EngineError

lines = st.lists(
    st.one_of(
        st.text(alphabet="abcBUILDPY_=\r ", max_size=12),
        st.sampled_from(["BUILDPY_APPLICATION_PHASE=copy", "BUILDPY_", "BUILD", "BUILDPY_X"]),
    ),
    max_size=8,
)


@given(lines, st.booleans(), st.lists(st.integers(min_value=1, max_value=7), max_size=20))
def test_marker_lines_are_hidden_however_the_output_is_cut(
    text_lines: list[str], final_newline: bool, cuts: list[int]
) -> None:
    text = "\n".join(text_lines) + ("\n" if final_newline and text_lines else "")
    data = text.encode()
    out = io.BytesIO()
    shown = _Unmarked(out)
    position = 0
    for size in cuts:
        shown.feed(data[position : position + size])
        position += size
    shown.feed(data[position:])
    shown.close()
    kept = [line for line in text.split("\n") if not line.startswith("BUILDPY_")]
    expected = "\n".join(kept)
    if not text.split("\n")[-1].startswith("BUILDPY_") or text.endswith("\n"):
        assert out.getvalue().decode() == expected
    else:  # an unterminated marker at the very end: dropped with nothing after it
        assert out.getvalue().decode() == expected + ("\n" if kept else "")


def test_ordinary_output_is_passed_on_at_once() -> None:
    out = io.BytesIO()
    shown = _Unmarked(out)
    shown.feed(b"Collecting fl")
    assert out.getvalue() == b"Collecting fl"  # no line is held unless it may be a marker
    shown.feed(b"ask\nBUILDPY_APPLICATION_PHASE=run\n")
    assert out.getvalue() == b"Collecting flask\n"


def _fed(tail: _Tail, data: bytes, size: int) -> list[str]:
    for start in range(0, len(data), size):
        tail.feed(data[start : start + size])
    return tail.lines()


def test_a_long_marker_line_reaches_buildpy_whole_and_is_never_shown() -> None:
    record = json.dumps({"reads": {f"app/module_{i}.py": "0" * 64 for i in range(20_000)}})
    assert len(record) > 1_000_000  # a large project's collectstatic record
    data = f"Collecting static\nBUILDPY_STATIC_INPUTS={record}\ndone\n".encode()
    lines = _fed(_Tail(10), data, 8192)  # as the attach stream cuts it
    assert Assembled(0, tuple(lines), 0.0).said("BUILDPY_STATIC_INPUTS") == record
    out = io.BytesIO()
    shown = _Unmarked(out)
    for start in range(0, len(data), 8192):
        shown.feed(data[start : start + 8192])
    shown.close()
    assert out.getvalue() == b"Collecting static\ndone\n"


def test_other_long_lines_are_cut_and_a_marker_line_only_past_its_own_limit() -> None:
    tail = _Tail(10)
    lines = _fed(tail, b"x" * (3 * _Tail.LINE_LIMIT) + b"\n", 4096)
    assert len(lines) >= 3 and all(len(line) <= _Tail.LINE_LIMIT + 4096 for line in lines)
    tail = _Tail(10)
    tail.MARKER_LIMIT = 100_000
    lines = _fed(tail, b"BUILDPY_X=" + b"y" * 250_000 + b"\n", 4096)
    assert len(lines) >= 2 and all(len(line) <= 100_000 + 4096 for line in lines)


def test_background_work_is_done_in_order_when_the_reaper_ends_and_never_raises() -> None:
    engine = FakeEngine()
    done: list[str] = []
    said = io.StringIO()
    log.configure(json=True, stream=said)
    with Reaper(engine) as reaper:
        reaper.defer("ctr1", "buildpy-build-x")
        reaper.release()
        reaper.background(lambda: done.append(f"after {engine.removed}"), "not this")
        reaper.background(lambda: 1 / 0, "could not divide")
    assert done == ["after ['ctr1']"]
    warning = json.loads(said.getvalue())
    assert (warning["event"], warning["error"]) == ("could not divide", "division by zero")
    log.configure(json=True, stream=io.StringIO())


def _names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


def _big_tree(root: Path) -> Path:
    for i in range(4):
        (root / f"d{i}").mkdir()
        for j in range(3):
            (root / f"d{i}" / f"f{j}").write_bytes(b"x" * 700)
    return root


def _split(root: Path, chunk_size: int = 1 << 20) -> Callable[[int, int], source.SplitArchive]:
    def archive(uid: int, gid: int) -> source.SplitArchive:
        layout = source.Layout("src", uid, gid)
        return source.split_tar_stream(
            root, rules=source.IgnoreRules(), parts=2, layout=layout, chunk_size=chunk_size
        )

    return archive


def test_a_split_upload_sends_the_parts_then_the_directories(tmp_path: Path) -> None:
    engine = FakeEngine()
    with WorkingContainer(engine, ContainerSpec("img", ("true",))) as container:
        container.upload("/tmp", _split(_big_tree(tmp_path)))
    *parts, (_, last) = engine.uploads
    assert len(parts) == 2
    assert _names(last) == ["src", "src/d0", "src/d1", "src/d2", "src/d3"]
    sent = sorted(name for _, data in parts for name in _names(data))
    assert sent == [f"src/d{i}/f{j}" for i in range(4) for j in range(3)]


@dataclass
class _FailingPart(FakeEngine):
    """The first upload fails after its first chunk; the others send slowly."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    failed: bool = False
    sent: list[bytes] = field(default_factory=list)

    def upload(self, container: str, path: str, archive: Iterable[bytes]) -> None:
        chunks = iter(archive)
        with self.lock:
            fail, self.failed = not self.failed, True
        if fail:
            next(chunks)
            raise EngineError("Podman refused the source archive")
        for chunk in chunks:
            time.sleep(0.01)
            self.sent.append(chunk)


def test_when_a_part_fails_the_others_stop_and_nothing_follows(tmp_path: Path) -> None:
    engine = _FailingPart()
    working = WorkingContainer(engine, ContainerSpec("img", ("true",)))
    with pytest.raises(EngineError, match="refused"), working as container:
        container.upload("/tmp", _split(_big_tree(tmp_path), chunk_size=512))
    sent = b"".join(engine.sent)
    assert sent.count(b"x" * 700) <= 6  # the files it had taken, not the tree's 12
    assert b"src/d0/\0" not in sent  # directories go last, and nothing went after the failure
    assert engine.removed == ["ctr1"]


@dataclass
class _Interrupted(FakeEngine):
    """Ctrl-C comes while this thread sends its part; the other part is slower."""

    ended: list[str] = field(default_factory=list)

    def upload(self, container: str, path: str, archive: Iterable[bytes]) -> None:
        if threading.current_thread() is threading.main_thread():
            raise KeyboardInterrupt
        try:
            for _ in archive:
                time.sleep(0.01)
        finally:
            self.ended.append(threading.current_thread().name)


def test_ctrl_c_is_raised_once_every_part_has_ended(tmp_path: Path) -> None:
    """So that no part still writes into the container while it is removed."""
    engine = _Interrupted()
    working = WorkingContainer(engine, ContainerSpec("img", ("true",)))
    with pytest.raises(KeyboardInterrupt), working as container:
        container.upload("/tmp", _split(_big_tree(tmp_path), chunk_size=512))
    assert engine.ended == ["buildpy-upload"]
    assert engine.removed == ["ctr1"]
