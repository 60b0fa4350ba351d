"""Every scenario app in tests/apps built by `buildpy build` and run three ways.

Each app is built once per builder, air-gapped: `--network none --wheelhouse DIR`, where DIR
was filled by `buildpy wheelhouse` from each app (see ``wheelhouses``: kept between runs).
Then it runs as the image's user, as --user 12345 and as --user 100001 (arbitrary UIDs with
GID 0, like OpenShift's restricted SCC); each run must answer HTTP 200 with the app's own body.
Rootless, a UID beyond the user's subuid range cannot run at all, so 100001 is left out
where the range is `useradd`'s default 65536.

The same builds hold `buildpy plan` to what the images do: after each build, the plan with
the same options must name the installer assemble announced in the build log
(`---> Installing dependencies via pipenv ...`), the project install, collectstatic, the
phases, a dependency layer that is now reused, and the start that the running container
shows (run's `---> Serving ...` line, Django's migrate, PID 1's command line and working
directory; for mod_wsgi-express, which execs Apache, the handler script it wrote).

Builders: every scenario on python-311 (full, Debian bookworm) and python-313-minimal
(Debian trixie): both Python versions and both variants, each scenario twice. The apps that
need the full image (mod_wsgi; sdists compiled against its -dev packages) also run on
python-313, the other full image. Running every scenario on all four images would double the
time and add little: the two variants share the scripts and differ only in OS packages,
which the full-only apps exercise.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _pytest.mark.structures import ParameterSet
from conftest import APPS, BUILDER_PREFIX, BuildFn, Built, built_event
from itest import http_get, logged, runnable, running
from wheelhouses import AppsWheelhouse

USERS = (None, "12345", "100001")


@dataclass(frozen=True)
class Scenario:
    name: str
    body: str
    port: int = 8080
    full_only: bool = False


SCENARIOS = [
    Scenario("requirements", "requirements: flask via gunicorn"),
    Scenario("setup-py", "setup-py: served as the setup.py distribution name"),
    Scenario("setup-cfg-pyproject", "setup-cfg-pyproject: installed from src/"),
    Scenario("poetry-src-layout", "poetry-src-layout: built by poetry-core"),
    Scenario("pipenv", "pipenv: installed from Pipfile.lock"),
    Scenario("micropipenv", "micropipenv: installed from Pipfile.lock"),
    Scenario("pipenv-pypi-python-org", "pipenv-pypi-python-org: installed from a lock naming"),
    Scenario(
        "micropipenv-pypi-python-org", "micropipenv-pypi-python-org: installed from a lock naming"
    ),
    # sclorg's micropipenv-test-app: the lock installs the application as a local path.
    Scenario(
        "micropipenv-local-path", "micropipenv-local-path: localapp=1.0 from the lock's local path"
    ),
    # Locks pinning versions older than the newest: exactly those, no dev group, and the
    # project itself only where it is not virtual.
    Scenario("uv-lock", "uv-lock: flask=3.0.0 werkzeug=3.0.1 six=none\n"),
    Scenario("poetry-lock", "poetry-lock: flask=3.0.0 werkzeug=3.0.1 six=none project=1.0.0\n"),
    Scenario("app-home", "app-home: served from the APP_HOME subdirectory"),
    Scenario("app-module", "app-module: mypkg.server:app"),
    Scenario("app-config-port", "app-config-port: original", port=8081),
    Scenario("port", "port: listening on PORT", port=8085),
    Scenario("gunicorn-conf-wsgi-app", "gunicorn-conf-wsgi-app: wsgi_app from gunicorn.conf.py"),
    Scenario("django", "django: gunicorn, migrated, users=0"),
    Scenario("django-port", "django-port: runserver original, users=0", port=8081),
    Scenario("app-py", "app-py: standalone http.server"),
    Scenario("app-sh", "app-sh: started by app.sh, pid1=tini"),
    Scenario("locale", "en_US.UTF-8 preferred=UTF-8 fs=utf-8 stdout=utf-8 text=Grüße, 世界 ✓"),
    Scenario("numpy", "numpy: sum=45"),
    Scenario("mod-wsgi", "mod-wsgi: served by Apache mod_wsgi=yes", full_only=True),
    # sclorg's micropipenv-requirements-test-app: mod_wsgi without gunicorn, only wsgi.py.
    Scenario(
        "micropipenv-mod-wsgi",
        "micropipenv-mod-wsgi: flask served by mod_wsgi-express, mod_wsgi=yes",
        full_only=True,
    ),
    Scenario(
        "native-sdists", "native-sdists: kerberos=True mysqlclient=2 enchant=2.", full_only=True
    ),
]

BOTH_VERSIONS = (f"{BUILDER_PREFIX}/python-311", f"{BUILDER_PREFIX}/python-313-minimal")
FULL = (f"{BUILDER_PREFIX}/python-311", f"{BUILDER_PREFIX}/python-313")


def builders_of(scenario: Scenario) -> tuple[str, ...]:
    return FULL if scenario.full_only else BOTH_VERSIONS


def apps_on(builder: str) -> list[Path]:
    return [APPS / s.name for s in SCENARIOS if builder in builders_of(s)]


# Also run by an ordinary user (scripts/test-rootless): Django under arbitrary UIDs.
ROOTLESS = {("django", "localhost/buildpy/python-311")}


def cases() -> list[ParameterSet]:
    out: list[ParameterSet] = []
    for scenario in SCENARIOS:
        for builder in builders_of(scenario):
            short = builder.rsplit("/", 1)[-1]
            marks = [pytest.mark.rootless] if (scenario.name, builder) in ROOTLESS else []
            out.append(pytest.param(scenario, builder, id=f"{scenario.name}-{short}", marks=marks))
    return out


def test_every_scenario_has_an_app_dir() -> None:
    names = {s.name for s in SCENARIOS} | {"both-pipenv-flags"}
    assert names == {p.name for p in APPS.iterdir() if p.is_dir()}


@pytest.mark.parametrize(("scenario", "builder"), cases())
def test_scenario_builds_and_answers_as_any_user(
    buildpy_build: BuildFn, apps_wheelhouse: AppsWheelhouse, scenario: Scenario, builder: str
) -> None:
    wheelhouse = apps_wheelhouse.ready(builder, apps_on(builder))
    built = buildpy_build(APPS / scenario.name, builder=builder, wheelhouse=wheelhouse)
    planned = buildpy_build.plan(APPS / scenario.name, builder=builder, wheelhouse=wheelhouse)
    assert_plan_matches_build(planned, built)
    for user in runnable(USERS):
        with running(built.tag, user=user, port=scenario.port) as (url, name):
            status, body = http_get(url + "/", timeout=90, name=name)
            if user is None:
                assert_plan_matches_start(planned["start"], name)
        assert status == 200, f"user {user}: HTTP {status}: {body}"
        assert scenario.body in body, f"user {user}: unexpected body {body!r}"


@pytest.mark.parametrize("builder", BOTH_VERSIONS)
def test_both_pipenv_flags_fail_with_reason(buildpy_build: BuildFn, builder: str) -> None:
    built = buildpy_build(APPS / "both-pipenv-flags", builder=builder, check=False)
    assert built.returncode != 0
    output = built.stdout + built.stderr
    assert "ENABLE_PIPENV and ENABLE_MICROPIPENV are both set" in output
    assert "Installing application source" not in output
    planned = buildpy_build.plan(APPS / "both-pipenv-flags", builder=builder)
    assert "exit 3" in planned["installer"]["error"]
    assert planned["start"]["command"] == []


# --------------------------------------------------------------- the plan against the image

# What s2i/assemble prints for each choice (the plan's mirror must make the same choice).
INSTALLING = re.compile(
    r"^---> Installing dependencies(?: via (\w+)(?: \((\S+)\))?)? \.\.\.$", re.M
)
PROJECT = re.compile(r"^---> Installing application \(via (\S+)\) \.\.\.$", re.M)


def assert_plan_matches_build(planned: dict[str, Any], built: Built) -> None:
    """The installer, project install, collectstatic and phases assemble's log shows."""
    event = built_event(built)
    assert planned["phases"]["count"] == event["phases"]
    # The plan ran after the build: a two-phase build's layer is there to reuse now.
    assert planned["dependency_layer"]["status"] == ("reuse" if event["phases"] == 2 else "none")
    installer, log = planned["installer"], assemble_output(built)
    if not event["dependencies_reused"]:  # else the install ran in an earlier build
        found = INSTALLING.search(log)
        tool = (found.group(1) or "pip") if found else None
        file = (found.group(2) or "requirements.txt") if found and tool != "micropipenv" else None
        expected = installer["file"] if installer["tool"] != "micropipenv" else None
        assert (tool, file) == (installer["tool"], expected), log[-3000:]
    project = PROJECT.search(log)
    assert (project.group(1) if project else None) == installer["project"]
    # An earlier build's collectstatic output may have been placed instead of a run
    # (docs/reference/static-files.md); the plan, made after the build, says so too.
    placed = bool(logged(built.stderr, "static files placed"))
    assert ("---> Collecting Django static files" in log) == (
        installer["collectstatic"] and not placed
    )
    if placed:
        assert installer["collectstatic"], "static files placed, yet the plan runs no collectstatic"
        assert (planned["static_files"] or "").startswith("placed as collectstatic left them")
    assert ("---> Upgrading pip" in log) == installer["upgrade_pip"]


def assemble_output(built: Built) -> str:
    """assemble's lines: the builds log JSON, one ``output`` event per line."""
    lines = []
    for line in built.stderr.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "output":
                lines.append(str(event.get("line", "")))
        else:
            lines.append(line)
    return "\n".join(lines)


def assert_plan_matches_start(start: dict[str, Any], name: str) -> None:
    """What run said it started, whether it migrated, and PID 1's command and directory."""
    logs = podman("logs", name)
    target = start["target"]
    said = {
        "gunicorn": f"---> Serving application with gunicorn ({target})"
        if target
        else "---> Serving application with gunicorn (wsgi_app from gunicorn.conf.py)",
        "script": f"---> Running application from script ({target})",
        "python": f"---> Running application from Python script ({target})",
        "runserver": "---> Serving application with 'manage.py runserver",
        "mod_wsgi": f"---> Serving application with mod_wsgi-express ({target})",
    }[start["kind"]]
    assert said in logs, logs[-2000:]
    assert ("---> Migrating database" in logs) == bool(start["before"])
    if start["kind"] == "script" and start["command"][0] != "tini":
        return  # the script execs what it likes: PID 1 is that now
    cmdline, _, cwd = podman(
        "exec", name, "sh", "-c", "tr '\\0' '\\n' </proc/1/cmdline; echo ==; readlink /proc/1/cwd"
    ).partition("==\n")
    pid1 = cmdline.splitlines()
    command = start["command"]
    home = "/opt/app-root/src"
    assert cwd.strip() == (home if start["directory"] == "." else f"{home}/{start['directory']}")
    if start["kind"] == "mod_wsgi" and command[0] != "tini":
        assert_mod_wsgi_serves(name, pid1, command, cwd.strip())
        return
    assert pid1[len(pid1) - len(command) + 1 :] == command[1:], pid1
    assert pid1[-len(command)].rsplit("/", 1)[-1] == command[0], pid1  # gunicorn: via python


def assert_mod_wsgi_serves(name: str, pid1: list[str], command: list[str], cwd: str) -> None:
    """mod_wsgi-express writes a server root, /tmp/mod_wsgi-HOST:PORT:UID, and execs Apache
    from there: PID 1 is httpd, named for mod_wsgi-express, and the handler script it
    wrote names the entry point, its type and the callable the plan's command gives."""
    assert "(mod_wsgi-express)" in pid1[0], pid1
    options = dict(zip(command, command[1:], strict=False))
    if options.get("--application-type") == "module":
        entry_type, entry_point = "module", options["module"]
    else:  # a script file, given first, relative to the working directory
        entry_type, entry_point = "script", f"{cwd}/{options['start-server']}"
    server_root = f"/tmp/mod_wsgi-{options['--host']}:{options['--port']}:*"
    handler = podman("exec", name, "sh", "-c", f"cat {server_root}/handler.wsgi")
    assert f"entry_point = r'{entry_point}'" in handler, handler
    assert f"application_type = '{entry_type}'" in handler, handler
    callable_object = options.get("--callable-object", "application")
    assert f"callable_object = '{callable_object}'" in handler, handler


def podman(*args: str) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr
