"""The builder images' contract: user, environment, labels, locale, virtualenv, arbitrary UIDs."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import BUILDER_PREFIX, BUILDPY
from fakes import tree
from itest import inspect_image

from buildpy import run_mirror
from buildpy.environment import Resolved
from buildpy.mirror import SourceView, Variables

BUILDERS = {
    f"{BUILDER_PREFIX}/python-311": ("3.11", "full"),
    f"{BUILDER_PREFIX}/python-311-minimal": ("3.11", "minimal"),
    f"{BUILDER_PREFIX}/python-313": ("3.13", "full"),
    f"{BUILDER_PREFIX}/python-313-minimal": ("3.13", "minimal"),
}
HOME = "/opt/app-root/src"


def podman_run(
    image: str, *command: str, user: str | None = None, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    cmd = ["podman", "run", "--rm", *extra]
    if user:
        cmd += ["--user", user]
    return subprocess.run([*cmd, image, *command], capture_output=True, text=True, timeout=120)


@contextmanager
def sleeping(image: str, user: str | None = None) -> Iterator[str]:
    """A container of the image that stays up, for `podman exec`."""
    name = f"buildpy-test-{uuid.uuid4().hex[:10]}"
    cmd = ["podman", "run", "-d", "--name", name]
    if user:
        cmd += ["--user", user]
    subprocess.run([*cmd, image, "sleep", "300"], check=True, capture_output=True, text=True)
    try:
        yield name
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True, check=False)


@pytest.fixture(params=sorted(BUILDERS), ids=lambda ref: ref.rsplit("/", 1)[-1])
def builder(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_image_config(builder: str) -> None:
    version, _ = BUILDERS[builder]
    config = inspect_image(builder)["Config"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert config["User"] == "1001:0"
    assert config["WorkingDir"] == HOME
    assert "8080/tcp" in config["ExposedPorts"]
    assert {
        "HOME": HOME,
        "PYTHON_VERSION": version,
        "PYTHONUNBUFFERED": "1",
        "PYTHONIOENCODING": "UTF-8",
        "LC_ALL": "en_US.UTF-8",
        "LANG": "en_US.UTF-8",
        "VIRTUAL_ENV": "/opt/app-root",
        "APP_ROOT": "/opt/app-root",
    }.items() <= env.items()
    path = env["PATH"].split(":")
    assert path.index("/opt/app-root/bin") < path.index("/usr/bin")
    labels = config["Labels"]
    assert labels["io.openshift.s2i.scripts-url"] == "image:///usr/libexec/s2i"
    assert labels["io.openshift.expose-services"] == "8080:http"
    assert version in labels["io.k8s.display-name"]
    assert {"builder", "python", f"python{version}"} <= set(labels["io.openshift.tags"].split(","))


def test_user_group_and_passwd(builder: str) -> None:
    done = podman_run(builder, "sh", "-c", "id -u; id -g; whoami; echo $HOME; pwd")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1001", "0", "default", HOME, HOME]


@pytest.mark.parametrize("uid", ["12345", "100001"])
def test_arbitrary_uid_gets_a_passwd_entry_from_the_image(builder: str, uid: str) -> None:
    # --passwd=false: no entry from Podman (as under CRI-O); the image's helper adds one.
    script = (
        ". /usr/libexec/s2i/generate-container-user; whoami; "
        "python -c 'import os, pwd; e = pwd.getpwuid(os.getuid()); print(e.pw_gid, e.pw_dir)'"
    )
    done = podman_run(builder, "bash", "-c", script, user=uid, extra=("--passwd=false",))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["default", "0", HOME]


@pytest.mark.parametrize("uid", ["12345", "100001"])
def test_arbitrary_uid_can_write_the_app_root(builder: str, uid: str) -> None:
    site = "/opt/app-root/lib/python$PYTHON_VERSION/site-packages"
    script = f"touch $HOME/x {site}/x /opt/app-root/bin/x; echo $?"
    done = podman_run(builder, "bash", "-c", script, user=uid)
    assert done.stdout.strip() == "0", done.stderr


def test_locale_is_generated(builder: str) -> None:
    done = podman_run(
        builder,
        "python",
        "-c",
        "import locale, sys; print(locale.setlocale(locale.LC_ALL, ''), sys.stdout.encoding, 'é')",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["en_US.UTF-8", "utf-8", "é"]


@pytest.mark.parametrize("shell", [("bash", "-c"), ("sh", "-ic"), ("bash", "-lc")])
def test_virtualenv_is_active_in_shells(builder: str, shell: tuple[str, str]) -> None:
    done = podman_run(builder, *shell, 'command -v python; command -v pip; echo "$VIRTUAL_ENV"')
    expected = ["/opt/app-root/bin/python", "/opt/app-root/bin/pip", "/opt/app-root"]
    assert done.stdout.split() == expected, done.stderr


def test_podman_exec_uses_the_virtualenv(builder: str) -> None:
    with sleeping(builder, user="12345") as name:
        done = subprocess.run(
            ["podman", "exec", name, "python", "-c", "import sys; print(sys.prefix)"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.stdout.strip() == "/opt/app-root", done.stderr


def test_usage_is_the_default_command(builder: str) -> None:
    done = podman_run(builder)
    assert done.returncode == 0
    assert "buildpy build SOURCE_DIR --builder IMAGE" in done.stdout


def test_buildpy_usage(builder: str, podman_url: str) -> None:
    done = subprocess.run(
        [*BUILDPY, "usage", builder],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CONTAINER_HOST": podman_url},
    )
    assert done.returncode == 0, done.stderr
    assert f"Python {BUILDERS[builder][0]}" in done.stdout


def test_variant_packages(builder: str) -> None:
    _, variant = BUILDERS[builder]
    tools = "gcc node npm apxs krb5-config gfortran mariadb_config msgfmt rsync tini"
    script = f"for t in {tools}; do command -v $t >/dev/null && echo $t; done"
    done = podman_run(builder, "sh", "-c", script)
    found = done.stdout.split()
    if variant == "full":
        assert found == tools.split()
    else:
        assert found == ["tini"]


def test_full_builders_have_sclorgs_libraries(builder: str) -> None:
    """The -dev packages of docs/reference/builder-packages.md, found as a build finds them."""
    _, variant = BUILDERS[builder]
    modules = "krb5-gssapi openblas lapack mariadb sqlite3 libcurl"
    script = f"for m in {modules}; do pkg-config --exists $m && echo $m; done;"
    script += " ldconfig -p | grep -o -e 'libenchant-2.so.2' -e 'libltdl.so.7' | sort -u"
    found = podman_run(builder, "sh", "-c", script).stdout.split()
    if variant == "full":
        assert found == [*modules.split(), "libenchant-2.so.2", "libltdl.so.7"]
    else:
        assert found == []


def test_scripts_are_in_place(builder: str) -> None:
    done = podman_run(builder, "sh", "-c", "cd /usr/libexec/s2i && ls")
    scripts = {"assemble", "run", "usage", "save-artifacts", "fix-permissions"}
    assert scripts <= set(done.stdout.split())


def test_run_names_a_bare_setup_py_after_setup_cfg(builder: str) -> None:
    """`setup()` with the name in setup.cfg: gunicorn gets that name, setuptools or not
    (Python 3.13 virtualenvs have none, so `setup.py --name` cannot answer there)."""
    script = (
        "mkdir -p /tmp/app /tmp/bin && cd /tmp/app"
        " && printf 'from setuptools import setup\\nsetup()\\n' > setup.py"
        " && printf '[metadata]\\nname = cfgname\\n' > setup.cfg"
        " && printf '#!/bin/sh\\necho gunicorn \"$@\"\\n' > /tmp/bin/gunicorn"
        " && chmod +x /tmp/bin/gunicorn"
        " && HOME=/tmp/app PATH=/tmp/bin:$PATH /usr/libexec/s2i/run"
    )
    done = podman_run(builder, "bash", "-c", script)
    assert "gunicorn cfgname --bind=0.0.0.0:8080" in done.stdout, done.stdout + done.stderr


MOD_WSGI_CASES = [
    {},
    {"APP_MODULE": "a.b:app", "WEB_CONCURRENCY": "3", "PORT": "8081"},
    {"APP_MODULE": "a.b", "APP_CONFIG": "conf.py", "WEB_CONCURRENCY": "2"},
]


def test_run_serves_with_mod_wsgi_express_as_the_plan_says(builder: str, tmp_path: Path) -> None:
    """Without gunicorn, run execs mod_wsgi-express (a stub here, so every builder can
    answer) with exactly the arguments buildpy plan's mirror of run gives."""
    files = {"requirements.txt": "mod_wsgi\n", "wsgi.py": "", "a/b.py": ""}
    script = (
        "mkdir -p /tmp/app/a /tmp/bin && cd /tmp/app && : > wsgi.py && : > a/b.py"
        " && printf '#!/bin/sh\\necho mod_wsgi-express \"$@\"\\n' > /tmp/bin/mod_wsgi-express"
        " && chmod +x /tmp/bin/mod_wsgi-express"
    )
    for env in MOD_WSGI_CASES:
        assigned = " ".join(f"{name}={value}" for name, value in env.items())
        script += f"; echo ==; env {assigned} HOME=/tmp/app PATH=/tmp/bin:$PATH"
        script += " /usr/libexec/s2i/run 2>&1"
    done = podman_run(builder, "bash", "-c", script)
    outputs = done.stdout.split("==\n")[1:]
    assert len(outputs) == len(MOD_WSGI_CASES), done.stdout + done.stderr
    root = tree(tmp_path, files)
    for env, output in zip(MOD_WSGI_CASES, outputs, strict=True):
        variables = Variables({k: Resolved(v, "-e", None) for k, v in env.items()})
        start = run_mirror.decide(
            SourceView(root), variables, {"requirements.txt": b"mod_wsgi\n"}, ["requirements.txt"]
        )
        assert start.kind == "mod_wsgi"
        assert f"---> Serving application with mod_wsgi-express ({start.target}) ..." in output
        execed = output.strip().splitlines()[-1].split()
        if "WEB_CONCURRENCY" not in env:
            assert execed[-1].isdigit(), output  # default_web_concurrency
            execed[-1] = run_mirror.WORKERS_COMPUTED
        assert tuple(execed) == start.command, output
        assert ("mod_wsgi-express ignores it" in output) == ("APP_CONFIG" in env), output
