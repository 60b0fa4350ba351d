"""Django's collected static files kept between builds, on real Podman with buildpy's
builder: placed again while nothing collectstatic read changed, collected again when
something did, never kept when collectstatic did what a record cannot follow."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import BUILDER_PREFIX, ROOT, BuildFn, built_event
from itest import copy_app, http_get, logged, running

BUILDER = f"{BUILDER_PREFIX}/python-311-minimal"
EXAMPLE = ROOT / "examples" / "hello-django"


def copy_example(tmp_path: Path) -> Path:
    # a dependency layer of its own, so no collectstatic result an earlier run kept
    return copy_app(EXAMPLE, tmp_path / "django", uuid.uuid4().hex, "django\ngunicorn\n")


def in_image(tag: str, *command: str) -> str:
    return subprocess.run(
        ["podman", "run", "--rm", tag, *command], capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.rootless
def test_static_files_are_placed_again_until_an_input_changes(
    buildpy_build: BuildFn, tmp_path: Path
) -> None:
    app = copy_example(tmp_path)
    css = app / "greeting" / "static" / "greeting" / "style.css"
    first = buildpy_build(app, builder=BUILDER)
    assert "Collecting Django static files" in first.stdout + first.stderr

    views = app / "greeting" / "views.py"
    views.write_text(views.read_text().replace("Hello from Django", "Howdy from Django"))
    forecast = buildpy_build.plan(app, builder=BUILDER)["static_files"]
    assert forecast.startswith("placed as collectstatic left them"), forecast
    second = buildpy_build(app, builder=BUILDER)
    assert logged(second.stderr, "static files placed"), second.stderr[-3000:]
    assert built_event(second)["assemble_seconds"] == 0  # no container ran
    assert "Collecting Django static files" not in second.stdout + second.stderr
    assert in_image(second.tag, "cat", "staticfiles/greeting/style.css") == css.read_text()
    mode = in_image(second.tag, "stat", "-c", "%a %u:%g", "staticfiles/greeting/style.css")
    assert mode.split()[1] == "1001:0" and int(mode.split()[0][1]) >= 6  # as fix-permissions
    for user in (None, "12345"):
        with running(second.tag, user=user) as (url, name):
            assert http_get(url + "/", name=name) == (200, "Howdy from Django on buildpy!\n")

    css.write_text("body { color: teal; }\n")  # a file collectstatic read
    forecast = buildpy_build.plan(app, builder=BUILDER)["static_files"]
    assert forecast == (
        "collectstatic runs: greeting/static/greeting/style.css changed since it last ran"
    )
    third = buildpy_build(app, builder=BUILDER)
    reran = logged(third.stderr, "collectstatic runs")
    assert reran and reran[0]["path"] == "greeting/static/greeting/style.css"
    assert "Collecting Django static files" in third.stdout + third.stderr
    assert in_image(third.tag, "cat", "staticfiles/greeting/style.css") == "body { color: teal; }\n"

    (css.parent / "extra.js").write_text("// new\n")  # a directory collectstatic listed
    fourth = buildpy_build(app, builder=BUILDER)
    assert logged(fourth.stderr, "collectstatic runs")
    assert in_image(fourth.tag, "cat", "staticfiles/greeting/extra.js") == "// new\n"

    settings = app / "hello" / "settings.py"  # new static directory, named by the settings
    (app / "assets").mkdir()
    (app / "assets" / "site.css").write_text("html {}\n")
    settings.write_text(settings.read_text() + 'STATICFILES_DIRS = [BASE_DIR / "assets"]\n')
    fifth = buildpy_build(app, builder=BUILDER)
    assert logged(fifth.stderr, "collectstatic runs")
    assert in_image(fifth.tag, "cat", "staticfiles/site.css") == "html {}\n"

    (app / "assets" / "site.css").write_text("html { margin: 0 }\n")  # read since it is named
    sixth = buildpy_build(app, builder=BUILDER)
    assert logged(sixth.stderr, "collectstatic runs")
    assert in_image(sixth.tag, "cat", "staticfiles/site.css") == "html { margin: 0 }\n"


def test_nothing_is_kept_when_collectstatic_runs_a_program(
    buildpy_build: BuildFn, tmp_path: Path
) -> None:
    app = copy_example(tmp_path)
    settings = app / "hello" / "settings.py"
    settings.write_text(
        settings.read_text() + 'import subprocess\nsubprocess.run(["true"], check=True)\n'
    )
    buildpy_build(app, builder=BUILDER)
    views = app / "greeting" / "views.py"
    views.write_text(views.read_text() + "# edited\n")
    second = buildpy_build(app, builder=BUILDER)
    assert not logged(second.stderr, "static files placed")
    assert "Collecting Django static files" in second.stdout + second.stderr


def test_disabled_collectstatic_places_the_source_without_a_run(
    buildpy_build: BuildFn, tmp_path: Path
) -> None:
    app = copy_example(tmp_path)
    (app / ".s2i").mkdir()
    (app / ".s2i" / "environment").write_text("DISABLE_COLLECTSTATIC=1\n")
    first = buildpy_build(app, builder=BUILDER)
    assert built_event(first)["assemble_seconds"] == 0
    forecast = buildpy_build.plan(app, builder=BUILDER)["static_files"]
    assert forecast.startswith("none: DISABLE_COLLECTSTATIC is set"), forecast
    assert "Collecting Django static files" not in first.stdout + first.stderr
    listing = subprocess.run(
        ["podman", "run", "--rm", first.tag, "ls", "staticfiles"], capture_output=True, text=True
    )
    assert listing.returncode != 0  # nothing collected
    with running(first.tag) as (url, name):
        assert http_get(url + "/", name=name) == (200, "Hello from Django on buildpy!\n")
