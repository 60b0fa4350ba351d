"""Air-gapped and mirrored builds against a fake engine: --wheelhouse, --index-url, the
`wheelhouse` command, and credentials that never show."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable
from pathlib import Path

import pytest
from fakes import BUILDER, FakeEngine
from hypothesis import given
from hypothesis import strategies as st
from test_build import PHASED, PLACING, _Sink, make_plan, phased_app
from test_build import app as app  # the fixture: a source with .s2i/environment

from buildpy import build, cli, indexes, leftovers, log, redact, wheelhouse, wheelvolume
from buildpy.engine import ImageInfo
from buildpy.errors import AssembleFailed, BuilderImageError, EngineError, UsageError
from buildpy.plan import BuildPlan

TOKEN = "s3cr3t-t0ken"
MIRROR = f"https://ci:{TOKEN}@mirror.example/simple"
FILLER = ImageInfo(
    id="sha256:filler",
    ref="filler",
    user="1001:0",
    labels={**BUILDER.labels, "io.buildpy.assemble-phases": "dependencies,application,wheelhouse"},
)


@pytest.fixture(autouse=True)
def logs() -> io.StringIO:
    """buildpy's log lines (cli.main, run by other tests, may have pointed them at a stream
    that is closed by now)."""
    stream = io.StringIO()
    log.configure(json=True, stream=stream)
    return stream


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    path = tmp_path / "wheels"
    path.mkdir()
    (path / "flask-3.0-py3-none-any.whl").write_bytes(b"wheel")
    return path


def env_file(engine: FakeEngine) -> str:
    """The build-only variables of the last upload, as the wrapper sources them."""
    return engine.uploaded_file(".buildpy/env").decode()


# ------------------------------------------------------------------ --wheelhouse


def test_a_wheelhouse_is_uploaded_to_a_volume_mounted_read_only_and_used_with_no_index(
    app: Path, wheels: Path
) -> None:
    """No host path in any container: one upload through a helper that never runs fills a
    volume of this build's own, which assemble mounts read-only; gone after the build."""
    (wheels / "sub").mkdir()
    (wheels / "sub" / "six-1.0-py3-none-any.whl").write_bytes(b"six")
    engine = FakeEngine()
    build.run(make_plan(app, wheelhouse=wheels), engine, output=_Sink())
    helper, spec = engine.created
    (volume,) = helper.volumes
    assert helper.name and helper.name.startswith("buildpy-upload-")
    assert (volume.target, volume.read_only) == (indexes.WHEELHOUSE_TARGET, False)
    assert "ctr1" not in engine.started and "ctr1" in engine.removed
    wheel_uploads = [path for path, _ in engine.uploads if path == indexes.WHEELHOUSE_TARGET]
    assert len(wheel_uploads) == 1
    assert spec.mounts == ()
    assert [(v.name, v.target, v.read_only) for v in spec.volumes if v.name == volume.name] == [
        (volume.name, indexes.WHEELHOUSE_TARGET, True)
    ]
    assert leftovers.maker_of(volume.name) == leftovers.Maker.this_process()
    # the volume is gone with the build: its content was there for assemble only
    assert volume.name not in engine.volumes_made and volume.name not in engine.volume_files
    script = env_file(engine)
    assert "export PIP_NO_INDEX='1'" in script
    assert f"export PIP_FIND_LINKS='{indexes.WHEELHOUSE_TARGET}'" in script
    assert "export UV_NO_INDEX='1'" in script
    assert str(wheels) not in script  # the host's path is not assemble's business
    assert not any(key.startswith(("PIP_", "UV_")) for key in spec.env)


def test_a_rebuild_that_only_places_the_source_uploads_no_wheelhouse(
    app: Path, wheels: Path
) -> None:
    engine = FakeEngine(stored={"placing": PLACING}, output=[b"BUILDPY_APPLICATION_PHASE=copy\n"])
    build.run(make_plan(phased_app(app), builder="placing", wheelhouse=wheels), engine, _Sink())
    uploads = len([path for path, _ in engine.uploads if path == indexes.WHEELHOUSE_TARGET])
    assert uploads == 1  # for the dependency phase
    (app / "app.py").write_text("print('again')\n")
    rebuilt = build.run(make_plan(app, builder="placing", wheelhouse=wheels), engine, _Sink())
    assert rebuilt.dependencies_reused
    assert [path for path, _ in engine.uploads].count(indexes.WHEELHOUSE_TARGET) == 1
    assert [name for name in engine.volumes_made if "wheelhouse" in name] == []


def test_assemble_reads_the_wheelhouse_from_the_volume(app: Path, wheels: Path) -> None:
    engine = FakeEngine()
    seen: list[bytes | None] = []

    def look() -> None:
        running = f"ctr{len(engine.created)}"
        target = f"{indexes.WHEELHOUSE_TARGET}/flask-3.0-py3-none-any.whl"
        seen.append(engine.read_file(running, target))

    engine.on_run = look
    build.run(make_plan(app, wheelhouse=wheels), engine, output=_Sink())
    assert seen == [b"wheel"]


@pytest.mark.parametrize("failure", ["assemble", "interrupt"])
def test_the_wheelhouse_volume_goes_when_the_build_fails(
    app: Path, wheels: Path, failure: str
) -> None:
    engine = FakeEngine(status=1)
    if failure == "interrupt":

        def interrupt() -> None:
            raise KeyboardInterrupt

        engine.on_run = interrupt
    with pytest.raises((AssembleFailed, KeyboardInterrupt)):
        build.run(make_plan(app, wheelhouse=wheels), engine, output=_Sink())
    assert [name for name in engine.volumes_made if "wheelhouse" in name] == []
    assert {f"ctr{i}" for i in range(1, len(engine.created) + 1)} <= set(engine.removed)


def test_a_failed_wheelhouse_upload_leaves_no_volume(app: Path, wheels: Path) -> None:
    class Refusing(FakeEngine):
        def upload(self, container: str, path: str, archive: Iterable[bytes]) -> None:
            raise EngineError("Podman refused the source archive")

    engine = Refusing()
    with pytest.raises(EngineError):
        build.run(make_plan(app, wheelhouse=wheels), engine, output=_Sink())
    assert [name for name in engine.volumes_made if "wheelhouse" in name] == []
    assert engine.removed == ["ctr1"] and engine.started == []


def test_the_wheelhouse_archive_holds_every_file_readable_by_anyone(wheels: Path) -> None:
    (wheels / "flask-3.0-py3-none-any.whl").chmod(0o600)
    (wheels / "nested").mkdir(mode=0o700)
    (wheels / "nested" / "x.tar.gz").write_bytes(b"sdist" * 300)
    (wheels / "link.whl").symlink_to(wheels / "nested" / "x.tar.gz")
    data = b"".join(chunk for chunk, _ in wheelvolume.wheelhouse_stream(wheels))
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = {m.name: m for m in archive.getmembers()}
        link = archive.extractfile("link.whl")
        assert link is not None and link.read() == b"sdist" * 300
    assert list(members) == sorted(members)  # parents first, sorted: deterministic
    assert {m.name: (m.mode, m.uid) for m in members.values()} == {
        "flask-3.0-py3-none-any.whl": (0o644, 0),
        "link.whl": (0o644, 0),
        "nested": (0o755, 0),
        "nested/x.tar.gz": (0o644, 0),
    }


def test_where_the_wheelhouse_lies_does_not_change_the_dependency_layer(
    app: Path, wheels: Path, tmp_path: Path
) -> None:
    engine = FakeEngine(stored={"phased": PHASED})
    first = build.run(
        make_plan(phased_app(app), builder="phased", wheelhouse=wheels), engine, output=_Sink()
    )
    moved = wheels.rename(tmp_path / "elsewhere")
    second = build.run(make_plan(app, builder="phased", wheelhouse=moved), engine, output=_Sink())
    assert (first.dependencies_reused, second.dependencies_reused) == (False, True)
    online = build.run(make_plan(app, builder="phased"), engine, output=_Sink())
    assert online.dependencies_reused is False  # installing from an index is another input


def test_wheelhouse_option_errors(app: Path, wheels: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a readable directory") as info:
        make_plan(app, wheelhouse=tmp_path / "missing")
    assert info.value.hint and "buildpy wheelhouse" in info.value.hint
    with pytest.raises(UsageError, match="exclude each other"):
        make_plan(app, wheelhouse=wheels, index_url="https://mirror.example/simple")


# ------------------------------------------------------------------ --index-url


def test_an_index_reaches_every_installer_build_only(app: Path) -> None:
    plan = make_plan(
        app,
        index_url=MIRROR,
        extra_index_urls=("https://extra.example/simple",),
        trusted_hosts=("extra.example",),
    )
    engine = FakeEngine()
    build.run(plan, engine, output=_Sink())
    script = env_file(engine)
    for line in (
        f"export PIP_INDEX_URL='{MIRROR}'",
        f"export PIPENV_PYPI_MIRROR='{MIRROR}'",
        f"export MICROPIPENV_DEFAULT_INDEX_URLS='{MIRROR},https://extra.example/simple'",
        f"export UV_INDEX_URL='{MIRROR}'",
        f"export {indexes.INDEX_VARIABLE}='{MIRROR}'",
        "export PIP_EXTRA_INDEX_URL='https://extra.example/simple'",
        "export PIP_TRUSTED_HOST='extra.example'",
    ):
        assert line in script
    spec = engine.created[0]
    assert TOKEN not in json.dumps([dict(spec.env), dict(spec.labels), list(spec.command)])
    assert not any(TOKEN in change for change in engine.commits[0].changes)


def test_a_new_token_keeps_the_dependency_layer_a_new_mirror_does_not(app: Path) -> None:
    engine = FakeEngine(stored={"phased": PHASED})

    def reused(url: str) -> bool:
        plan = make_plan(phased_app(app), builder="phased", index_url=url)
        return build.run(plan, engine, output=_Sink()).dependencies_reused

    assert reused("https://ci:one@mirror.example/simple") is False
    assert reused("https://ci:two@mirror.example/simple") is True
    assert reused("https://ci:two@other.example/simple") is False


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"index_url": "ftp://mirror.example/simple"}, "not an http"),
        ({"index_url": "https:///simple"}, "names no host"),
        ({"index_url": "https://mirror.example/a b"}, "not an http"),
        ({"index_url": "https://m.example/s", "trusted_hosts": ("a b",)}, "not a host name"),
        ({"extra_index_urls": ("https://extra.example/simple",)}, "need --index-url"),
    ],
)
def test_index_option_errors(app: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        make_plan(app, **kwargs)


def test_pip_gives_up_quickly_unless_told_otherwise(app: Path) -> None:
    engine = FakeEngine()
    build.run(make_plan(app), engine, output=_Sink())
    assert "export PIP_RETRIES='1'" in env_file(engine)
    build.run(make_plan(app, env=("PIP_RETRIES=5",)), engine, output=_Sink())
    assert "PIP_RETRIES" not in env_file(engine)  # the image's own value stands
    assert engine.created[1].env["PIP_RETRIES"] == "5"


# ------------------------------------------------------------------ credentials


@given(
    user=st.text(alphabet="abcdefgh_-.", min_size=1, max_size=8),
    password=st.text(alphabet="ABCDEFGH0123456789%!~", min_size=4, max_size=16),
    before=st.text(alphabet=" abc=\n'\"", max_size=8),
)
def test_mask_leaves_the_user_and_hides_the_password(user: str, password: str, before: str) -> None:
    text = f"{before}https://{user}:{password}@mirror.example:8443/simple/ after"
    masked = redact.mask(text)
    assert f":{password}@" not in masked
    assert f"https://{user}:***@mirror.example:8443/simple/ after" in masked
    assert redact.mask(masked) == masked


def test_mask_leaves_urls_without_credentials_alone() -> None:
    for text in ("http://127.0.0.1:8080/simple/", "see https://pypi.org/simple", "a:b@c"):
        assert redact.mask(text) == text


@given(cuts=st.lists(st.integers(min_value=0, max_value=120), max_size=6))
def test_a_stream_is_masked_wherever_it_is_cut(cuts: list[int]) -> None:
    data = f"Looking in indexes: {MIRROR}\nnext\r{MIRROR} tail".encode()
    masker = redact.LineMasker()
    points = [0, *sorted(set(min(c, len(data)) for c in cuts)), len(data)]
    shown = b"".join(masker.feed(data[a:b]) for a, b in zip(points, points[1:])) + masker.flush()
    assert shown == redact.mask_bytes(data)
    assert TOKEN.encode() not in shown


def test_assemble_output_and_its_error_tail_are_masked(app: Path) -> None:
    engine = FakeEngine(
        status=1, output=[b"Looking in indexes: https://ci:", TOKEN.encode(), b"@m/\n"]
    )
    sink = _Sink()
    with pytest.raises(AssembleFailed) as info:
        build.run(make_plan(app), engine, output=sink)
    assert TOKEN.encode() not in sink.data and b"ci:***@m/" in sink.data
    assert TOKEN not in info.value.message


def test_log_lines_and_errors_are_masked(
    capsys: pytest.CaptureFixture[str], app: Path, logs: io.StringIO
) -> None:
    log.get("test").info("using", index=MIRROR)
    assert TOKEN not in logs.getvalue() and "ci:***@" in logs.getvalue()
    code = cli.main(["build", str(app), "--index-url", f"ftp://ci:{TOKEN}@m.example/"])
    assert code == 2
    assert TOKEN not in capsys.readouterr().err


# ------------------------------------------------------------------ buildpy wheelhouse


def fill_plan(app: Path, **kwargs: object) -> BuildPlan:
    return make_plan(app, builder="filler", cache=False, **kwargs)


def test_fill_runs_the_wheelhouse_phase_as_root_with_the_directory_writable(
    app: Path, wheels: Path
) -> None:
    engine = FakeEngine(stored={"filler": FILLER})
    engine.on_run = (wheels / "gunicorn-27.0-py3-none-any.whl").touch
    (wheels / ".incoming.x").mkdir()
    filled = wheelhouse.fill(
        fill_plan(app, env=("ENABLE_PIPENV=1",)),
        indexes.wheelhouse_to_fill(wheels),
        engine,
        _Sink(),
    )
    assert filled.added == ("gunicorn-27.0-py3-none-any.whl",) and filled.total == 2
    (spec,) = engine.created
    assert spec.user == "0" and spec.volumes == ()
    assert [(m.target, m.read_only) for m in spec.mounts] == [(indexes.WHEELHOUSE_TARGET, False)]
    assert spec.env["ENABLE_PIPENV"] == "1"  # the variables that decide the installer
    script = env_file(engine)
    assert "export BUILDPY_ASSEMBLE_PHASE='wheelhouse'" in script
    assert "PIP_NO_INDEX" not in script
    assert b"app.py" in engine.uploads[0][1]  # the whole source: projects are prepared
    assert engine.commits == [] and engine.removed == ["ctr1"]


def test_fill_needs_a_builder_with_the_phase_and_the_builders_assemble(
    app: Path, wheels: Path
) -> None:
    engine = FakeEngine(stored={"filler": FILLER, BUILDER.ref: BUILDER})
    target = indexes.wheelhouse_to_fill(wheels)
    with pytest.raises(BuilderImageError, match="cannot fill a wheelhouse") as info:
        wheelhouse.fill(make_plan(app, cache=False), target, engine, _Sink())
    assert info.value.hint and "buildpy builder build" in info.value.hint
    (app / ".s2i" / "bin").mkdir()
    (app / ".s2i" / "bin" / "assemble").write_text("#!/bin/sh\n")
    with pytest.raises(UsageError, match="its own assemble"):
        wheelhouse.fill(fill_plan(app), target, engine, _Sink())
    assert engine.created == []


def test_the_wheelhouse_command_makes_the_directory_before_asking_podman(
    capsys: pytest.CaptureFixture[str], app: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTAINER_HOST", f"unix://{tmp_path}/none.sock")
    code = cli.main(["wheelhouse", str(app), str(tmp_path / "new" / "wheels")])
    assert code == 5  # no Podman here
    assert (tmp_path / "new" / "wheels").is_dir()
    assert capsys.readouterr().out == ""
