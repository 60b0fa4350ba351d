"""The working container: what the user sees of assemble, and the reaper's background work."""

from __future__ import annotations

import io
import json

from fakes import FakeEngine
from hypothesis import given
from hypothesis import strategies as st

from buildpy import log
from buildpy.container import Reaper, _Unmarked

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
