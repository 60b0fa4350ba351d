"""Fast rebuilds on real Podman: the dependency layer, the download cache, incremental builds."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import BUILDER_PREFIX, BUILDPY, ROOT, BuildFn, built_event
from itest import copy_app, http_get, inspect_image, running

BUILDER = f"{BUILDER_PREFIX}/python-311-minimal"
EXAMPLE = ROOT / "examples" / "hello-flask"


def copy_example(tmp_path: Path) -> Path:
    return copy_app(EXAMPLE, tmp_path / "flask", tmp_path.name, "flask\ngunicorn\n")


def downloads_volume() -> Path:
    return Path(
        subprocess.run(
            ["podman", "volume", "inspect", "--format", "{{.Mountpoint}}", "buildpy-downloads"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )


@pytest.mark.rootless
def test_source_change_reuses_the_dependency_layer(buildpy_build: BuildFn, tmp_path: Path) -> None:
    app = copy_example(tmp_path)
    first_build = buildpy_build(app, builder=BUILDER)
    first = built_event(first_build)
    assert (first["phases"], first["dependencies_reused"]) == (2, False)
    assert "Installing dependencies" in first_build.stderr
    assert "BUILDPY_APPLICATION_PHASE" not in first_build.stderr  # buildpy's, not the user's

    wsgi = app / "wsgi.py"
    wsgi.write_text(wsgi.read_text().replace("from buildpy!", "from a rebuild!"))
    second = buildpy_build(app, "--format", "json", builder=BUILDER)
    event = built_event(second)
    assert (event["phases"], event["dependencies_reused"]) == (2, True)
    result = json.loads(second.stdout)  # --format json: the built event's figures, on stdout
    assert result["image"] == inspect_image(second.tag)["Id"]  # in full, and it exists
    assert result["image"].startswith(event["image"]) and result["size"] == event["size"] > 0
    assert (result["tag"], result["dependencies_reused"]) == (second.tag, True)
    assert "dependency layer reused" in second.stderr
    assert "Installing dependencies" not in second.stdout + second.stderr
    assert "source placed" in second.stderr  # no assemble run was needed
    assert event["assemble_seconds"] == 0
    for user in (None, "12345"):
        with running(second.tag, user=user) as (url, name):
            assert http_get(url + "/", name=name) == (200, "Hello from a rebuild!\n")
    modes = subprocess.run(
        [
            "podman",
            "run",
            "--rm",
            "--user",
            "12345",
            second.tag,
            "stat",
            "-c",
            "%a %u:%g",
            "wsgi.py",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert (
        modes[1] == "1001:0" and int(modes[0][1]) >= 6
    )  # group 0 may write, as assemble leaves it

    (app / "requirements.txt").write_text((app / "requirements.txt").read_text() + "six\n")
    # (builds interrupted by other tests may have left stages; they are swept after an hour)
    stages = set(downloads_volume().glob("index-*/wheels/.incoming.*"))
    third = buildpy_build(app, builder=BUILDER)
    assert built_event(third)["dependencies_reused"] is False
    grown = [
        json.loads(line) for line in third.stderr.splitlines() if "installing dependencies" in line
    ]
    assert grown and grown[0]["on_top_of"].startswith("localhost/buildpy-cache/dependencies:")
    output = third.stdout + third.stderr
    assert "Successfully installed six" in output  # only the new requirement was installed
    assert "flask" not in output.split("Successfully installed", 1)[1].splitlines()[0].lower()
    # the added package's wheel was kept for later builds, by the keeper that ran
    # alongside the install, and nothing of the keeper's is left in the cache
    # (one wheel directory per package index: this build's is among them)
    kept = sorted(p.name for p in downloads_volume().glob("index-*/wheels/*"))
    assert any(name.startswith("six-") and name.endswith(".whl") for name in kept), kept
    assert set(downloads_volume().glob("index-*/wheels/.incoming.*")) <= stages
    modules = subprocess.run(
        ["podman", "run", "--rm", third.tag, "python", "-c", "import flask, six; print('both')"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert modules.strip() == "both"


def test_a_cold_build_keeps_its_wheels_alongside_the_install(
    buildpy_build: BuildFn, simple_index_url: str, tmp_path: Path
) -> None:
    # An index of its own (the fragment is dropped by pip, kept by the cache's digest): its
    # download cache starts empty, as on a cold CI runner, so the install runs from the index
    # at once and the wheels are kept by the pip wheel running alongside it.
    app = copy_example(tmp_path)
    (app / "requirements.txt").write_text(
        f"--extra-index-url {simple_index_url}#{tmp_path.name}\nflask\ngunicorn\n"
    )
    before = set(downloads_volume().glob("index-*"))
    built = buildpy_build(app, builder=BUILDER)
    assert built_event(built)["dependencies_reused"] is False
    assert "No wheels cached for this index yet" in built.stderr
    new = set(downloads_volume().glob("index-*")) - before
    assert len(new) == 1, new  # this build's index, and only it, got a cache
    kept = sorted(p.name for p in next(iter(new)).glob("wheels/*"))
    for name in ("flask-", "gunicorn-", "werkzeug-"):
        assert any(k.lower().startswith(name) and k.endswith(".whl") for k in kept), kept
    assert not [k for k in kept if k.startswith(".incoming")], kept
    with running(built.tag) as (url, name):
        assert http_get(url + "/", name=name)[0] == 200


def test_images_carry_no_caches_and_no_build_files(buildpy_build: BuildFn, tmp_path: Path) -> None:
    built = buildpy_build(copy_example(tmp_path), builder=BUILDER)
    changed = subprocess.run(
        ["podman", "image", "diff", built.tag, BUILDER],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for leftover in (
        "/.cache/pip",
        "/tmp/src",
        "/tmp/.buildpy",
        "/tmp/buildpy-added",
        "/dev/shm",
        "buildpy-cache",
    ):
        assert leftover not in changed, leftover
    env = " ".join(inspect_image(built.tag)["Config"]["Env"])
    assert "BUILDPY_" not in env.replace("BUILDPY_IMAGE_VARIANT", "")
    assert "PIP_CACHE_DIR" not in env


def test_requirements_that_install_the_source_build_in_one_phase(
    buildpy_build: BuildFn, tmp_path: Path
) -> None:
    app = tmp_path / "editable"
    (app / "mypkg").mkdir(parents=True)
    (app / "mypkg" / "__init__.py").write_text("GREETING = 'from an editable install'\n")
    (app / "setup.py").write_text(
        "from setuptools import setup\nsetup(name='mypkg', packages=['mypkg'])\n"
    )
    (app / "requirements.txt").write_text("-e .\n")
    (app / "app.py").write_text(
        "import http.server, mypkg\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.end_headers()\n"
        "        self.wfile.write(mypkg.GREETING.encode())\n"
        "http.server.HTTPServer(('0.0.0.0', 8080), H).serve_forever()\n"
    )
    built = buildpy_build(app, "-e", "APP_FILE=app.py", builder=f"{BUILDER_PREFIX}/python-311")
    assert built_event(built)["phases"] == 1
    assert "requirements.txt line 1 installs from the source tree" in built.stderr
    with running(built.tag) as (url, name):
        assert http_get(url + "/", name=name) == (200, "from an editable install")


@pytest.mark.rootless
def test_cache_ls_shows_dependency_images_and_the_download_volume(
    buildpy_build: BuildFn, podman_url: str, tmp_path: Path
) -> None:
    buildpy_build(copy_example(tmp_path), builder=BUILDER)
    env = {**os.environ, "CONTAINER_HOST": podman_url}
    listing = subprocess.run(
        [*BUILDPY, "cache", "ls"], capture_output=True, text=True, env=env, check=True
    ).stdout
    rows = [line.split("\t") for line in listing.splitlines()]
    assert any(r[1] == "image" and "localhost/buildpy-cache/dependencies:" in r[2] for r in rows)
    assert any(r[1] == "volume" and r[2] == "buildpy-downloads" for r in rows)
    assert not any("buildpy-test" in line for line in listing.splitlines())


def test_incremental_restores_artifacts(buildpy_build: BuildFn, tmp_path: Path) -> None:
    app = tmp_path / "incremental"
    bindir = app / ".s2i" / "bin"
    bindir.mkdir(parents=True)
    scripts = {
        "assemble": "#!/bin/sh\nset -e\nmkdir -p $HOME\n"
        "if [ -f /tmp/artifacts/count ]; then n=$(cat /tmp/artifacts/count); else n=0; fi\n"
        "echo $((n + 1)) > $HOME/count\nrm -rf /tmp/artifacts\n",
        "save-artifacts": "#!/bin/sh\ncd $HOME && tar -cf - count\n",
        "run": "#!/bin/sh\ncat $HOME/count\n",
    }
    for name, text in scripts.items():
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    first = buildpy_build(app, offline=False)
    again = buildpy_build(app, "--incremental", "--tag", first.tag, offline=False)
    assert "artifacts saved from the previous image" in again.stderr
    count = subprocess.run(
        ["podman", "run", "--rm", first.tag], capture_output=True, text=True, check=True
    ).stdout
    assert count.strip() == "2"


def test_quiet_shows_no_assemble_output(buildpy_build: BuildFn, tmp_path: Path) -> None:
    app = copy_example(tmp_path)
    built = buildpy_build(app, "--no-cache", builder=BUILDER)
    quiet = buildpy_build(app, "--no-cache", builder=BUILDER, quiet=True)
    assert "---> Installing" in built.stderr
    assert "---> Installing" not in quiet.stderr and "Collecting" not in quiet.stderr


@pytest.mark.rootless
@pytest.mark.skipif(
    os.getuid() == 0,
    reason="prunes every cached dependency image in root's storage, which others building "
    "as root on this host share; runs in the rootless pass, in the test user's own storage",
)
def test_cache_prune_removes_what_cache_ls_lists(
    buildpy_build: BuildFn, podman_url: str, tmp_path: Path
) -> None:
    built = buildpy_build(copy_example(tmp_path), builder=BUILDER)
    env = {**os.environ, "CONTAINER_HOST": podman_url}
    pruned = subprocess.run(
        [*BUILDPY, "cache", "prune"], capture_output=True, text=True, env=env, check=True
    ).stdout
    rows = [line.split("\t") for line in pruned.splitlines()]
    assert any(r[:2] == ["removed", "image"] for r in rows), pruned
    volumes = [r[:3] for r in rows if r[1] == "volume"]
    assert volumes == [["removed", "volume", "buildpy-downloads"]], pruned
    listing = subprocess.run(
        [*BUILDPY, "cache", "ls"], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert listing == ""
    with running(built.tag) as (url, name):  # the app image keeps its layers
        assert http_get(url + "/", name=name)[0] == 200
