"""Every scenario app in tests/apps built by `buildpy build` and run three ways.

Each app is built once per builder, air-gapped: `--network none --wheelhouse DIR`, where DIR
was filled by `buildpy wheelhouse` from each app (see ``wheelhouses``: kept between runs).
Then it runs as the image's user, as --user 12345 and as --user 100001 (arbitrary UIDs with
GID 0, like OpenShift's restricted SCC); each run must answer HTTP 200 with the app's own body.

Builders: every scenario on python-311 (full, Debian bookworm) and python-313-minimal
(Debian trixie): both Python versions and both variants, each scenario twice. The apps that
need the full image (mod_wsgi) also run on python-313, the other full image. Running every
scenario on all four images would double the time and add little: the two variants share
the scripts and differ only in OS packages, which the full-only apps exercise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from _pytest.mark.structures import ParameterSet
from conftest import APPS, BUILDER_PREFIX, BuildFn
from itest import http_get, running
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
]

BOTH_VERSIONS = (f"{BUILDER_PREFIX}/python-311", f"{BUILDER_PREFIX}/python-313-minimal")
FULL = (f"{BUILDER_PREFIX}/python-311", f"{BUILDER_PREFIX}/python-313")


def builders_of(scenario: Scenario) -> tuple[str, ...]:
    return FULL if scenario.full_only else BOTH_VERSIONS


def apps_on(builder: str) -> list[Path]:
    return [APPS / s.name for s in SCENARIOS if builder in builders_of(s)]


def cases() -> list[ParameterSet]:
    out: list[ParameterSet] = []
    for scenario in SCENARIOS:
        for builder in builders_of(scenario):
            short = builder.rsplit("/", 1)[-1]
            out.append(pytest.param(scenario, builder, id=f"{scenario.name}-{short}"))
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
    for user in USERS:
        with running(built.tag, user=user, port=scenario.port) as (url, name):
            status, body = http_get(url + "/", timeout=90, name=name)
        assert status == 200, f"user {user}: HTTP {status}: {body}"
        assert scenario.body in body, f"user {user}: unexpected body {body!r}"


@pytest.mark.parametrize("builder", BOTH_VERSIONS)
def test_both_pipenv_flags_fail_with_reason(buildpy_build: BuildFn, builder: str) -> None:
    built = buildpy_build(APPS / "both-pipenv-flags", builder=builder, check=False)
    assert built.returncode != 0
    output = built.stdout + built.stderr
    assert "ENABLE_PIPENV and ENABLE_MICROPIPENV are both set" in output
    assert "Installing application source" not in output
