"""Carrying the cache through a directory: the manifest, its checks, atomic replacement,
and export/import against the fake engine (tests/integration/test_ephemeral_runner.py does
the same against real Podman and an empty second storage)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import pytest
from fakes import FakeEngine, tar_of
from hypothesis import given
from hypothesis import strategies as st

from buildpy import build, cache, cachedir, carry, layer, staticfiles
from buildpy import plan as build_plan
from buildpy.cachedir import CachedFile, CachedImage, Downloads, Manifest, StaticFiles
from buildpy.config import BuildOptions
from buildpy.engine import ImageInfo
from buildpy.errors import BuilderImageError, CacheDirError, EngineError

BUILDER = ImageInfo(
    id="sha256:" + "b" * 64,
    ref="localhost/buildpy/python-311",
    user="1001:0",
    env={"HOME": "/opt/app-root/src"},
    labels={
        "io.openshift.s2i.scripts-url": "image:///usr/libexec/s2i",
        layer.PHASES_LABEL: "dependencies,application",
    },
    layers=("sha256:" + "1" * 64, "sha256:" + "2" * 64),
)
WHEELS = {"flask-3.1.3-py3-none-any.whl": b"flask wheel", "six-1.17.0-py3-none-any.whl": b"six"}


class _Sink:
    def write(self, chunk: bytes) -> int:
        return len(chunk)

    def flush(self) -> None:
        pass


def storage() -> FakeEngine:
    """Container storage with the builder only, as on a fresh CI runner."""
    return FakeEngine(stored={BUILDER.ref: BUILDER}, output=[b"BUILDPY_APPLICATION_PHASE=copy\n"])


def plan_of(app: Path) -> build_plan.BuildPlan:
    options = BuildOptions(source=app, builder=BUILDER.ref)
    return build_plan.make(options, describe=lambda root: None)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    root.mkdir()
    (root / "app.py").write_text("print('hi')\n")
    (root / "requirements.txt").write_text("flask\n")
    return root


def built(app: Path) -> FakeEngine:
    """Storage after one build of ``app``, with two wheels in the download cache."""
    engine = storage()
    build.run(plan_of(app), engine, output=_Sink())
    engine.output = [b"BUILDPY_WHEELS=2\n"]
    engine.files[carry.SELECTED] = tar_of({f"wheels/{n}": d for n, d in WHEELS.items()})
    return engine


def export(engine: FakeEngine, app: Path, directory: Path) -> carry.Exported:
    return carry.export(engine, plan_of(app), BUILDER, directory)


def dependency_names(engine: FakeEngine) -> list[str]:
    return sorted(n for n in engine.stored if n.startswith(cache.DEPENDENCY_REPOSITORY))


# ----------------------------------------------------------------------------- export/import


def test_export_then_import_into_empty_storage(app: Path, tmp_path: Path) -> None:
    source = built(app)
    directory = tmp_path / "cache"
    exported = export(source, app, directory)
    (image,) = exported.manifest.images
    tag, growth = layer.names(plan_of(app), BUILDER)
    assert image.names == (tag, growth) and exported.reason is None
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [cachedir.MANIFEST, carry.DOWNLOADS_FILE, image.file.name]
    )
    with tarfile.open(directory / image.file.name) as archive:
        sizes = {m.name: m.size for m in archive.getmembers()}
    assert [sizes[f"{d[7:]}.tar"] for d in BUILDER.layers] == [0, 0]  # thin: no builder layers
    helper = source.created[-1]
    assert helper.image == image.id and helper.network == "none"
    assert helper.volumes[0].name == cache.DOWNLOADS_VOLUME
    assert source.removed[-1] == f"ctr{len(source.created)}"

    runner = storage()
    runner.output = [b"BUILDPY_WHEELS=2\n"]
    imported = carry.import_cache(runner, directory)
    assert [i.id for i in imported.loaded] == [image.id] and imported.wheels == 2
    found = runner.find_image(tag)
    assert found is not None and found.id == image.id and growth in found.names
    assert runner.uploads[-1][1] == (directory / carry.DOWNLOADS_FILE).read_bytes()
    assert runner.created[-1].image == BUILDER.id and runner.created[-1].user == "1001:0"
    assert cache.DOWNLOADS_VOLUME in runner.volumes_made

    (app / "app.py").write_text("print('changed')\n")
    runner.output = [b"BUILDPY_APPLICATION_PHASE=copy\n"]
    assert build.run(plan_of(app), runner, output=_Sink()).dependencies_reused


def _keep_static(engine: FakeEngine, app: Path, store: Path) -> str:
    """A kept collectstatic result for the app's dependency layer, as a build leaves it."""
    tag, _ = layer.names(plan_of(app), BUILDER)
    found = engine.find_image(tag)
    assert found is not None
    name = staticfiles.name_for(plan_of(app), found.id, BUILDER.env)
    assert name is not None
    (store / name).mkdir(parents=True)
    view = staticfiles.View.of(app, plan_of(app).rules, ["app.py"], ["."], [])
    record = {"static_root": "staticfiles", **view.as_json()}
    (store / name / "inputs.json").write_text(json.dumps(record))
    (store / name / "files.tar").write_bytes(tar_of({"staticfiles/site.css": b"a {}"}))
    return name


def test_a_kept_collectstatic_result_travels_with_its_layer(
    app: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = built(app)
    name = _keep_static(source, app, staticfiles.STORE)
    exported = export(source, app, tmp_path / "cache")
    assert exported.manifest.static is not None and exported.manifest.static.name == name
    assert (tmp_path / "cache" / carry.STATIC_FILE).is_file()

    machine = staticfiles.STORE
    monkeypatch.setattr(staticfiles, "STORE", tmp_path / "runner-store")  # another machine
    runner = storage()
    runner.output = [b"BUILDPY_WHEELS=2\n"]
    imported = carry.import_cache(runner, tmp_path / "cache")
    assert imported.static == exported.manifest.static
    for part in ("inputs.json", "files.tar"):
        carried = (staticfiles.STORE / name / part).read_bytes()
        assert carried == (machine / name / part).read_bytes()
    kept = staticfiles.find(name, app, plan_of(app).rules)  # what the runner's build asks
    assert kept is not None and kept.static_root == "staticfiles"
    assert [m.name for m in kept.members("src") if m.data] == ["src/staticfiles/site.css"]


def test_without_a_kept_result_nothing_static_is_exported(app: Path, tmp_path: Path) -> None:
    exported = export(built(app), app, tmp_path / "cache")
    assert exported.manifest.static is None
    assert not (tmp_path / "cache" / carry.STATIC_FILE).exists()


@pytest.mark.parametrize(
    ("members", "words"),
    [
        ({"inputs.json": b"{}", "files.tar": b""}, "not a collectstatic record"),
        ({"inputs.json": b"{}"}, "must hold inputs.json and files.tar"),
        (
            {
                "inputs.json": b'{"static_root": "../x", "reads": {}, "listed": {}, "looked": {}}',
                "files.tar": tar_of({"x/a": b""}),
            },
            "not inside the source directory",
        ),
        (
            {
                "inputs.json": b'{"static_root": "s", "reads": {}, "listed": {}, "looked": {}}',
                "files.tar": tar_of({"s/a": b"", "t/b": b""}),
            },
            "more than the files of one directory",
        ),
    ],
)
def test_a_bad_static_result_is_refused_before_anything_is_imported(
    app: Path, tmp_path: Path, members: dict[str, bytes], words: str
) -> None:
    source = built(app)
    _keep_static(source, app, staticfiles.STORE)
    directory = tmp_path / "cache"
    export(source, app, directory)
    (directory / carry.STATIC_FILE).write_bytes(tar_of(members))
    manifest = cachedir.read(directory)
    assert manifest is not None and manifest.static is not None
    static = StaticFiles(cachedir.describe(directory / carry.STATIC_FILE), manifest.static.name)
    cachedir.write(directory, replace(manifest, static=static))  # the sizes and digests agree

    runner = storage()
    with pytest.raises(CacheDirError, match=words):
        carry.import_cache(runner, directory)
    assert runner.loaded == [] and runner.created == []


def test_importing_again_only_names_what_is_present(app: Path, tmp_path: Path) -> None:
    source = built(app)
    export(source, app, tmp_path / "cache")
    source.output = [b"BUILDPY_WHEELS=0\n"]
    imported = carry.import_cache(source, tmp_path / "cache")
    assert imported.loaded == () and len(imported.present) == 1
    assert source.loaded == []


def test_a_missing_or_empty_directory_imports_nothing(tmp_path: Path) -> None:
    runner = storage()
    assert carry.import_cache(runner, tmp_path / "absent").manifest is None
    (tmp_path / "empty").mkdir()
    assert carry.import_cache(runner, tmp_path / "empty").manifest is None
    assert runner.created == [] and runner.loaded == []


def tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda d, m: tamper(d / m.images[0].file.name), "does not match its SHA-256"),
        (lambda d, m: (d / m.images[0].file.name).unlink(), "is missing"),
        (lambda d, m: (d / carry.DOWNLOADS_FILE).write_bytes(b"x"), "has 1 bytes"),
        (lambda d, m: (d / cachedir.MANIFEST).write_text("{"), "cannot read"),
        (lambda d, m: (d / cachedir.MANIFEST).unlink(), "not a buildpy cache directory"),
    ],
)
def test_a_damaged_directory_is_refused_with_nothing_imported(
    app: Path, tmp_path: Path, damage: object, words: str
) -> None:
    directory = tmp_path / "cache"
    manifest = export(built(app), app, directory).manifest
    damage(directory, manifest)  # type: ignore[operator]
    runner = storage()
    with pytest.raises(CacheDirError, match=words) as info:
        carry.import_cache(runner, directory)
    assert info.value.exit_code == 11 and info.value.hint
    assert runner.loaded == [] and runner.created == [] and runner.volumes_made == {}


def test_a_cache_for_another_builder_is_refused(app: Path, tmp_path: Path) -> None:
    export(built(app), app, tmp_path / "cache")
    other = FakeEngine(stored={BUILDER.ref: ImageInfo(id="sha256:" + "c" * 64, ref=BUILDER.ref)})
    with pytest.raises(CacheDirError, match=r"made against .* but here") as info:
        carry.import_cache(other, tmp_path / "cache")
    assert "bbbbbbbbbbbb" in info.value.message and "cccccccccccc" in info.value.message
    with pytest.raises(BuilderImageError, match="not in local storage"):
        carry.import_cache(FakeEngine(stored={}), tmp_path / "cache")
    assert other.loaded == []


def test_a_failing_step_removes_what_the_import_loaded(app: Path, tmp_path: Path) -> None:
    export(built(app), app, tmp_path / "cache")
    runner = storage()
    runner.status, runner.output = 1, [b"cp: No space left on device\n"]
    with pytest.raises(EngineError, match="No space left"):
        carry.import_cache(runner, tmp_path / "cache")
    assert len(runner.loaded) == 1  # it was loaded, then removed again
    assert dependency_names(runner) == [] and runner.find_image(runner.loaded[0]) is None
    assert runner.volumes_made == {}  # the volume the import made is gone too


def test_an_archive_that_names_other_images_is_refused(app: Path, tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    manifest = export(built(app), app, directory).manifest
    image = manifest.images[0]
    path = directory / image.file.name
    with tarfile.open(path) as archive:
        files = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}  # type: ignore[union-attr]
    (item,) = json.loads(files["manifest.json"])
    item["RepoTags"] = [BUILDER.ref + ":latest"]  # would take the builder's name
    files["manifest.json"] = json.dumps([item]).encode()
    path.write_bytes(tar_of(files))
    entry = CachedImage(cachedir.describe(path), image.id, image.names, image.key)
    cachedir.write(directory, Manifest(BUILDER.ref, BUILDER.id, (entry,), manifest.downloads))
    with pytest.raises(CacheDirError, match="does not hold image"):
        carry.import_cache(storage(), directory)


def test_exporting_again_keeps_what_is_unchanged_and_drops_the_rest(
    app: Path, tmp_path: Path
) -> None:
    engine = built(app)
    directory = tmp_path / "cache"
    first = export(engine, app, directory)
    archive = directory / first.manifest.images[0].file.name
    inode = archive.stat().st_ino
    again = export(engine, app, directory)
    assert again.kept == (first.manifest.images[0].id,)
    assert archive.stat().st_ino == inode  # hard-linked, not written again

    (app / "requirements.txt").write_text("flask\nsix\n")
    engine.output = [b"BUILDPY_APPLICATION_PHASE=copy\n"]
    build.run(plan_of(app), engine, output=_Sink())
    engine.output = [b"BUILDPY_WHEELS=2\n"]
    third = export(engine, app, directory)
    assert third.kept == () and not archive.exists()
    names = {cachedir.MANIFEST, carry.DOWNLOADS_FILE, third.manifest.images[0].file.name}
    assert {p.name for p in directory.iterdir()} == names
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".cache")] == []


def test_export_without_a_dependency_layer_says_why(app: Path, tmp_path: Path) -> None:
    exported = export(storage(), app, tmp_path / "cache")
    assert exported.manifest.images == () and exported.manifest.downloads is None
    assert "build it first" in (exported.reason or "")
    assert carry.import_cache(storage(), tmp_path / "cache").loaded == ()


def test_export_never_replaces_a_directory_that_is_not_a_cache(app: Path) -> None:
    before = sorted(p.name for p in app.iterdir())
    with pytest.raises(CacheDirError, match="refusing to replace it"):
        export(built(app), app, app)
    assert sorted(p.name for p in app.iterdir()) == before


def test_a_failed_export_leaves_the_earlier_cache_as_it_was(app: Path, tmp_path: Path) -> None:
    engine = built(app)
    directory = tmp_path / "cache"
    export(engine, app, directory)
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    engine.status = 1
    with pytest.raises(EngineError, match="collect the download cache"):
        export(engine, app, directory)
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".cache")] == []


def test_an_archive_stream_that_breaks_off_is_an_engine_error(app: Path, tmp_path: Path) -> None:
    engine = built(app)
    whole = engine.image_archive

    @contextmanager
    def broken(ref: str) -> Iterator[BinaryIO]:
        with whole(ref) as stream:
            yield io.BytesIO(stream.read()[:700])

    engine.image_archive = broken  # type: ignore[method-assign]
    with pytest.raises(EngineError, match="the archive Podman sent"):
        export(engine, app, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


# ----------------------------------------------------------------------------- the directory


def test_replacement_works_without_an_atomic_exchange(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cachedir, "_exchange", lambda a, b: False)
    target = tmp_path / "cache"
    for content in ("old", "new"):
        with cachedir.staging(target) as work:
            (work / cachedir.MANIFEST).write_text(content)
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]
    assert (target / cachedir.MANIFEST).read_text() == "new"
    assert oct(target.stat().st_mode & 0o777) == oct(0o755)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"format": 2}, "reads format 1"),
        ({"builder": {"ref": "b", "id": "sha256:../x"}}, "'id' is not valid"),
        ({"images": [{"file": "../x", "names": [], "size": 1}]}, "'file' is not valid"),
        ({"downloads": {"file": "d.tar", "size": "1", "sha256": "0" * 64}}, "'size'"),
        ({"static": {"file": "s.tar", "size": 1, "sha256": "0" * 64, "name": "../x"}}, "'name'"),
    ],
)
def test_bad_manifests_say_what_is_wrong(change: dict[str, object], words: str) -> None:
    document = json.loads(Manifest("b", "sha256:" + "0" * 64).to_json())
    with pytest.raises(CacheDirError, match=words):
        cachedir.parse({**document, **change}, "buildpy-cache.json")


def test_images_may_only_get_cache_names() -> None:
    image = CachedImage(CachedFile("a.tar", 1, "0" * 64), "sha256:" + "0" * 64, ("x:y",), "k")
    document = json.loads(Manifest("b", "sha256:" + "0" * 64, (image,)).to_json())
    with pytest.raises(CacheDirError, match="may only be named"):
        cachedir.parse(document, "m")


_names = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True).filter(
    lambda n: n != cachedir.MANIFEST
)
_hex = st.from_regex(r"[0-9a-f]{64}", fullmatch=True)
_files = st.builds(CachedFile, _names, st.integers(0, 1 << 40), _hex)
_images = st.builds(
    CachedImage,
    _files,
    _hex.map(lambda h: f"sha256:{h}"),
    st.lists(_hex.map(lambda h: f"{cache.DEPENDENCY_REPOSITORY}:{h[:32]}"), max_size=2).map(tuple),
    st.text(max_size=64),
)


@given(
    st.text(max_size=40),
    _hex,
    st.lists(_images, max_size=3, unique_by=lambda i: i.file.name).map(tuple),
    st.none() | st.builds(Downloads, _files, st.integers(0, 10_000)),
    st.none() | st.builds(StaticFiles, _files, _hex.map(lambda h: h[:32])),
)
def test_a_manifest_reads_back_as_written(
    ref: str,
    builder: str,
    images: tuple[CachedImage, ...],
    downloads: Downloads | None,
    static: StaticFiles | None,
) -> None:
    names = [i.file.name for i in images] + ([downloads.file.name] if downloads else [])
    names += [static.file.name] if static else []
    manifest = Manifest(
        ref, f"sha256:{builder}", images, downloads, created="2026-12-05T00:00Z", static=static
    )
    if len(set(names)) != len(names):
        with pytest.raises(CacheDirError, match="listed twice"):
            cachedir.parse(json.loads(manifest.to_json()), "m")
        return
    assert cachedir.parse(json.loads(manifest.to_json()), "m") == manifest


# ----------------------------------------------------------------------------- the scripts


def test_export_picks_the_wheels_of_what_is_installed(tmp_path: Path) -> None:
    """SELECT_WHEELS, run by this interpreter: pytest is installed here, 'absent' is not."""
    from importlib.metadata import version

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    mine = f"pytest-{version('pytest')}-py3-none-any.whl"
    for name in (mine, "pytest-0.0.1-py3-none-any.whl", "absent-1.0-py3-none-any.whl"):
        (wheels / name).write_bytes(b"wheel")
    out = tmp_path / "out.tar"
    done = subprocess.run(
        [sys.executable, "-c", carry.SELECT_WHEELS, str(wheels), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "BUILDPY_WHEELS=1"
    with tarfile.open(out) as archive:
        assert archive.getnames() == [f"wheels/{mine}"]
    carry.check_downloads(out)


def test_import_adds_only_missing_wheels_whole(tmp_path: Path) -> None:
    """PLACE_WHEELS under /bin/sh: a wheel the cache has stays; no staging is left behind."""
    source, dest = tmp_path / "from", tmp_path / "to"
    source.mkdir()
    dest.mkdir()
    (source / "a-1-py3-none-any.whl").write_bytes(b"new a")
    (source / "b-1-py3-none-any.whl").write_bytes(b"new b")
    (dest / "b-1-py3-none-any.whl").write_bytes(b"old b")
    done = subprocess.run(
        ["/bin/sh", "-c", carry.PLACE_WHEELS, "place", str(source), str(dest)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "BUILDPY_WHEELS=1"
    assert sorted(os.listdir(dest)) == ["a-1-py3-none-any.whl", "b-1-py3-none-any.whl"]
    assert (dest / "b-1-py3-none-any.whl").read_bytes() == b"old b"


def test_a_downloads_tar_with_anything_but_wheels_is_refused(tmp_path: Path) -> None:
    for name in ("wheels/../../etc/passwd", "other/x.whl", "wheels/.hidden.whl", "wheels/a.txt"):
        path = tmp_path / "d.tar"
        path.write_bytes(tar_of({name: b"x"}))
        with pytest.raises(CacheDirError, match="unexpected member"):
            carry.check_downloads(path)
