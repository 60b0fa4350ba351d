"""Behaviour of the S2I scripts beyond "it answers": hot deploy, workers, errors, layers."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import APPS, BUILDER_PREFIX, BuildFn
from itest import http_get, logged, running

BUILDER = f"{BUILDER_PREFIX}/python-311"
MINIMAL_313 = f"{BUILDER_PREFIX}/python-313-minimal"


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120)


def wait_for_body(url: str, wanted: str, name: str, tries: int = 120) -> str:
    """GET url until the body contains `wanted` (bounded: `tries` polls, 0.5 s apart)."""
    body = ""
    for _ in range(tries):
        _, body = http_get(url, timeout=30, name=name)
        if wanted in body:
            return body
        time.sleep(0.5)
    return body


@pytest.mark.parametrize(
    ("app", "port", "path", "before", "after"),
    [
        (
            "app-config-port",
            8081,
            "wsgi.py",
            "app-config-port: original",
            "app-config-port: edited",
        ),
        (
            "django-port",
            8081,
            "hello/views.py",
            "django-port: runserver original",
            "django-port: runserver edited",
        ),
    ],
    ids=["gunicorn-reload", "django-runserver"],
)
@pytest.mark.rootless
def test_hot_deploy(
    buildpy_build: BuildFn, app: str, port: int, path: str, before: str, after: str
) -> None:
    built = buildpy_build(APPS / app, builder=BUILDER)
    with running(built.tag, port=port) as (url, name):
        status, body = http_get(url + "/", timeout=90, name=name)
        assert status == 200 and before in body
        edit = podman("exec", name, "sed", "-i", "s/original/edited/", f"/opt/app-root/src/{path}")
        assert edit.returncode == 0, edit.stderr
        body = wait_for_body(url + "/", after, name)
    assert after in body


@pytest.fixture(scope="module")
def requirements_image(buildpy_build: BuildFn) -> str:
    """The requirements app on the default builder, built once for the tests below.

    With --no-cache: one assemble run, so the image's own layer holds everything assemble
    changed (with a dependency layer, the dependencies would sit in the layer below).
    """
    return buildpy_build(APPS / "requirements", "--no-cache", builder=BUILDER).tag


def test_web_concurrency_follows_the_memory_limit(requirements_image: str) -> None:
    cpus = len(os.sched_getaffinity(0))
    expected = max(1, min((200 - 43) // 40, 2 * cpus, 12))
    with running(requirements_image, args=["--memory", "200m"]) as (url, name):
        http_get(url + "/", timeout=90, name=name)
        environ = podman("exec", name, "cat", "/proc/1/environ").stdout.split("\0")
    assert f"WEB_CONCURRENCY={expected}" in environ


def test_web_concurrency_set_by_the_user_wins(requirements_image: str) -> None:
    with running(requirements_image, env={"WEB_CONCURRENCY": "3"}) as (url, name):
        http_get(url + "/", timeout=90, name=name)
        workers = podman("exec", name, "sh", "-c", "ls /proc | grep -c '^[0-9]'").stdout
        environ = podman("exec", name, "cat", "/proc/1/environ").stdout.split("\0")
    assert "WEB_CONCURRENCY=3" in environ
    assert int(workers) >= 4  # the arbiter and three workers


def test_explicit_missing_app_file_is_an_error(requirements_image: str) -> None:
    done = podman("run", "--rm", "-e", "APP_FILE=missing.py", requirements_image)
    assert done.returncode == 1
    assert "APP_FILE file 'missing.py' not found" in done.stderr


def test_explicit_app_module_skips_the_app_py_default(
    buildpy_build: BuildFn, tmp_path: Path
) -> None:
    source = tmp_path / "module-and-app-py"
    shutil.copytree(APPS / "app-module", source)
    (source / "app.py").write_text("raise SystemExit('app.py must not run: APP_MODULE is set')\n")
    built = buildpy_build(source, builder=MINIMAL_313)
    with running(built.tag) as (url, name):
        status, body = http_get(url + "/", timeout=90, name=name)
    assert status == 200 and "app-module: mypkg.server:app" in body


def test_nothing_to_run_is_a_clear_error(buildpy_build: BuildFn, tmp_path: Path) -> None:
    source = tmp_path / "nothing"
    source.mkdir()
    (source / "README").write_text("no application here\n")
    built = buildpy_build(source, builder=MINIMAL_313)
    done = podman("run", "--rm", built.tag)
    assert done.returncode == 1
    assert "don't know how to run your application" in done.stderr
    assert "APP_MODULE" in done.stderr and "APP_FILE" in done.stderr


def test_assemble_leaves_the_builders_virtualenv_alone(requirements_image: str) -> None:
    # fix-permissions touches only files that lack group permissions: the builder's own
    # virtualenv files must not be copied into the application's layer.
    changed = podman("diff", requirements_image).stdout.split("\n")
    pip_init = [line for line in changed if line.endswith("/site-packages/pip/__init__.py")]
    assert pip_init == []
    assert any(line.endswith("/site-packages/flask/__init__.py") for line in changed)


def test_application_phase_leaves_the_dependency_layer_alone(buildpy_build: BuildFn) -> None:
    # Two assemble runs: the second (application) must not copy up the dependencies the
    # first one installed, so the image's own layer has the source and no site-packages.
    built = buildpy_build(APPS / "requirements", builder=BUILDER)
    assert "installing dependencies" in built.stderr or "dependency layer reused" in built.stderr
    changed = podman("diff", built.tag).stdout.split("\n")
    assert any(line.endswith("/opt/app-root/src/wsgi.py") for line in changed)
    assert [line for line in changed if "/site-packages/" in line] == []


def test_project_installed_once_and_collectstatic_runs(buildpy_build: BuildFn) -> None:
    built = buildpy_build(APPS / "setup-cfg-pyproject", builder=BUILDER)
    assert (built.stdout + built.stderr).count("Installing application (via") == 1
    django = buildpy_build(APPS / "django", builder=BUILDER)
    # collected now, or placed as an earlier build's collectstatic left them
    placed = bool(logged(django.stderr, "static files placed"))
    assert placed or "Collecting Django static files" in django.stdout + django.stderr
    listing = podman("run", "--rm", django.tag, "cat", "staticfiles/hello/hello.txt")
    assert listing.stdout.strip() == "static file collected"


def test_collectstatic_without_manage_py_is_a_warning(
    buildpy_build: BuildFn, tmp_path: Path
) -> None:
    source = tmp_path / "django-no-manage"
    source.mkdir()
    (source / "requirements.txt").write_text("django\n")
    (source / "app.py").write_text("print('never run')\n")
    built = buildpy_build(source, builder=MINIMAL_313)
    assert built.returncode == 0
    assert "no manage.py" in built.stdout + built.stderr
