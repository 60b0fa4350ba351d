"""staticfiles: when kept collectstatic output may be placed again, and what is placed."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import BinaryIO

import pytest
from fakes import BUILDER, FakeEngine

from buildpy import plan as build_plan
from buildpy import source, staticfiles
from buildpy.config import BuildOptions
from buildpy.plan import BuildPlan

HOME = "/opt/app-root/src"


@pytest.fixture(autouse=True)
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "store"
    monkeypatch.setattr(staticfiles, "STORE", where)
    return where


def app(tmp_path: Path, ignore: str = "staticfiles/\n") -> Path:
    root = tmp_path / "app"
    (root / "site").mkdir(parents=True)
    (root / "site" / "settings.py").write_text("STATIC_ROOT = 'staticfiles'\n")
    (root / "shop" / "static").mkdir(parents=True)
    (root / "shop" / "static" / "shop.css").write_text("a {}\n")
    (root / "shop" / "views.py").write_text("def view(): ...\n")
    (root / ".s2iignore").write_text(ignore)
    return root


def said(root: Path, rules: source.IgnoreRules, **changes: object) -> str:
    """The line record-inputs gives for a collectstatic that read the settings and the CSS."""
    view = staticfiles.View.of(
        root, rules, ["site/settings.py", "shop/static/shop.css"], [".", "shop/static"], ["shop"]
    )
    record = {
        "root": HOME,
        "static_root": f"{HOME}/staticfiles",
        "reads": view.reads,
        "listed": list(view.listed),
        "looked": {"shop": "d"},
        "untracked": [],
        **changes,
    }
    return json.dumps(record)


def engine_with_output() -> FakeEngine:
    engine = FakeEngine()
    engine.placed[("ctr", f"{HOME}/staticfiles/shop/shop.css")] = b"a {}\n"
    engine.placed[("ctr", f"{HOME}/staticfiles/admin/base.css")] = b"b {}\n"
    return engine


def test_kept_files_are_found_while_no_input_changes(tmp_path: Path) -> None:
    root = app(tmp_path)
    rules = source.IgnoreRules.load(root)
    assert staticfiles.keep("k", said(root, rules), root, rules, engine_with_output(), "ctr")

    (root / "shop" / "views.py").write_text("def view(): return 'changed'\n")  # not an input
    kept = staticfiles.find("k", root, rules)
    assert kept is not None and kept.static_root == "staticfiles"
    members = {m.name: m.data for m in kept.members("src")}
    assert members["src/staticfiles/shop/shop.css"] == b"a {}\n"
    assert members["src/staticfiles/admin/base.css"] == b"b {}\n"
    assert "src/staticfiles/" in members  # the directory itself, with its mode


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "shop" / "static" / "shop.css").write_text("a { color: red }\n"),
        lambda root: (root / "site" / "settings.py").write_text("STATIC_ROOT = 'elsewhere'\n"),
        lambda root: (root / "shop" / "static" / "new.js").write_text(""),  # a listing
        lambda root: (root / "local_settings.py").write_text(""),  # the root's listing
        lambda root: (root / "shop" / "views.py").unlink() or (root / "shop" / "views.py").mkdir(),
    ],
    ids=["read file", "settings", "new static file", "new module", "kind"],
)
def test_any_changed_input_means_collectstatic_runs(tmp_path: Path, change: object) -> None:
    root = app(tmp_path)
    rules = source.IgnoreRules.load(root)
    record = json.loads(said(root, rules))
    record["looked"] = {"shop": "d", "shop/views.py": "f"}
    assert staticfiles.keep("k", json.dumps(record), root, rules, engine_with_output(), "ctr")
    change(root)  # type: ignore[operator]
    assert staticfiles.find("k", root, rules) is None


def test_an_input_the_ignore_file_drops_counts_as_changed(tmp_path: Path) -> None:
    root = app(tmp_path)
    rules = source.IgnoreRules.load(root)
    assert staticfiles.keep("k", said(root, rules), root, rules, engine_with_output(), "ctr")
    (root / ".s2iignore").write_text("staticfiles/\n*.css\n")
    assert staticfiles.find("k", root, source.IgnoreRules.load(root)) is None


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"untracked": ["ran another program (subprocess.Popen)"]}, "untrusted record"),
        ({"static_root": "/var/www/static"}, "STATIC_ROOT outside the source"),
        ({"static_root": None}, "no STATIC_ROOT"),
        ({"reads": {"site/settings.py": "0000000000000000"}}, "source changed since upload"),
        ({"static_root": f"{HOME}/../../etc"}, "STATIC_ROOT climbing out"),
        ({"reads": {"../../etc/passwd": "0000000000000000"}}, "a read outside the source"),
        ({"listed": ["/etc"]}, "an absolute listing"),
    ],
    ids=["untracked", "outside", "none", "race", "climbing", "read outside", "absolute"],
)
def test_nothing_is_kept_from_a_record_that_cannot_be_trusted(
    tmp_path: Path, store: Path, changes: dict[str, object], why: str
) -> None:
    root = app(tmp_path)
    rules = source.IgnoreRules.load(root)
    line = said(root, rules, **changes)
    assert not staticfiles.keep("k", line, root, rules, engine_with_output(), "ctr"), why
    assert staticfiles.find("k", root, rules) is None
    assert not list(store.glob("*")) or not (store / "k").exists()


def test_nothing_is_kept_when_static_root_is_part_of_the_source(tmp_path: Path) -> None:
    root = app(tmp_path, ignore="")
    (root / "staticfiles").mkdir()
    rules = source.IgnoreRules.load(root)
    assert not staticfiles.keep("k", said(root, rules), root, rules, engine_with_output(), "ctr")


def test_links_in_static_root_are_not_kept(tmp_path: Path) -> None:
    root = app(tmp_path)
    rules = source.IgnoreRules.load(root)

    class Linking(FakeEngine):
        def archive(self, container: str, path: str, dest: BinaryIO) -> bool:
            with tarfile.open(fileobj=dest, mode="w|") as archive:
                link = tarfile.TarInfo("staticfiles/shop.css")
                link.type, link.linkname = tarfile.SYMTYPE, "/opt/app-root/src/shop/static/shop.css"
                archive.addfile(link)
            return True

    assert not staticfiles.keep("k", said(root, rules), root, rules, Linking(), "ctr")


def test_the_store_keeps_the_newest_entries_and_prune_empties_it(
    tmp_path: Path, store: Path
) -> None:
    root = app(tmp_path)
    rules = source.IgnoreRules.load(root)
    for n in range(staticfiles.KEEP + 3):
        assert staticfiles.keep(
            f"k{n}", said(root, rules), root, rules, engine_with_output(), "ctr"
        )
    assert len([p for p in store.iterdir() if not p.name.startswith(".")]) == staticfiles.KEEP
    assert staticfiles.prune() == staticfiles.KEEP
    assert list(store.iterdir()) == []


def test_the_key_covers_the_layer_and_every_variable() -> None:
    base = staticfiles.key("sha256:a", {"DEBUG": "0"})
    assert base == staticfiles.key("sha256:a", {"DEBUG": "0"})
    assert base != staticfiles.key("sha256:b", {"DEBUG": "0"})
    assert base != staticfiles.key("sha256:a", {"DEBUG": "1"})
    assert base != staticfiles.key("sha256:a", {"DEBUG": "0", "STATIC_URL": "/s/"})


def test_lookup_and_listing_answer_as_the_upload_would(tmp_path: Path) -> None:
    root = app(tmp_path, ignore="*.css\nsecret/\n")
    (root / "secret").mkdir()
    (root / "secret" / "key.txt").write_text("k")
    rules = source.IgnoreRules.load(root)
    assert source.listing(root, rules, "shop/static") == []
    assert source.listing(root, rules, ".") == [".s2iignore", "shop", "site"]
    assert source.lookup(root, rules, "secret/key.txt") is None
    assert source.lookup(root, rules, "shop/static/shop.css") is None
    assert source.lookup(root, rules, "shop/views.py") is not None
    assert source.lookup(root, rules, "shop/views.py/x") is None
    assert source.listing(root, rules, "shop/views.py") is None


def _plan(root: Path, **options: object) -> BuildPlan:
    return build_plan.make(
        BuildOptions(source=root, builder=BUILDER.ref, **options),  # type: ignore[arg-type]
        describe=lambda where: None,
    )


def test_the_name_covers_what_collectstatic_sees_and_none_when_it_is_disabled(
    tmp_path: Path,
) -> None:
    root = app(tmp_path)
    (root / ".s2i").mkdir()
    (root / ".s2i" / "environment").write_text("DEBUG=0\n")
    name = staticfiles.name_for(_plan(root), "sha256:layer", BUILDER.env)
    assert name is not None
    assert name == staticfiles.name_for(_plan(root), "sha256:layer", BUILDER.env)
    assert name != staticfiles.name_for(_plan(root), "sha256:other", BUILDER.env)
    # a variable of the image, and one of the build only: collectstatic sees both
    assert name != staticfiles.name_for(_plan(root, env=("DEBUG=1",)), "sha256:layer", BUILDER.env)
    with_build_env = _plan(root, build_env=("STATIC_URL=/s/",))
    assert name != staticfiles.name_for(with_build_env, "sha256:layer", BUILDER.env)
    # assemble skips collectstatic for any non-empty value, so nothing is kept or placed
    disabled = _plan(root, env=("DISABLE_COLLECTSTATIC=1",))
    assert staticfiles.name_for(disabled, "sha256:layer", BUILDER.env) is None
    (root / ".s2i" / "environment").write_text("DISABLE_COLLECTSTATIC=yes\n")
    assert staticfiles.name_for(_plan(root), "sha256:layer", BUILDER.env) is None
