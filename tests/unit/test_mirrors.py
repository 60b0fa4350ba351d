"""The mirrors of s2i/assemble and s2i/run: each decision, from files and variables.

tests/integration/test_s2i_apps.py holds them to what the built images really do.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import tree

from buildpy import assemble_mirror, dependencies, run_mirror
from buildpy.environment import Resolved
from buildpy.mirror import SourceView, Variables, names
from buildpy.source import IgnoreRules


def variables(**values: str) -> Variables:
    return Variables({k: Resolved(v, ".s2i/environment", 1) for k, v in values.items()})


def install(root: Path, rules: str = "", **env: str) -> assemble_mirror.Install:
    ignore = IgnoreRules.from_text(rules)
    files = dict(dependencies.select(root, ignore).contents)
    return assemble_mirror.decide(SourceView(root, ignore), variables(**env), files)


def start(root: Path, **env: str) -> run_mirror.Start:
    files = dict(dependencies.select(root).contents)
    chosen = assemble_mirror.decide(SourceView(root), variables(**env), files)
    return run_mirror.decide(SourceView(root), variables(**env), files, chosen.reads)


# ------------------------------------------------------------------------- assemble


def commands(found: assemble_mirror.Install) -> list[str]:
    return [step.command for step in found.steps]


def test_requirements_txt_means_pip(tmp_path: Path) -> None:
    found = install(tree(tmp_path, {"requirements.txt": "flask\n"}))
    assert (found.tool, found.file, found.error) == ("pip", "requirements.txt", None)
    assert commands(found) == ["pip install -r requirements.txt"]
    assert "ENABLE_PIPENV and ENABLE_MICROPIPENV are unset" in found.steps[0].reason


def test_no_dependency_file_installs_nothing_and_says_so(tmp_path: Path) -> None:
    found = install(tree(tmp_path, {"app.py": ""}))
    assert found.tool is None and found.steps == ()
    assert "no dependencies are installed" in found.notes[0]


def test_an_ignored_requirements_txt_is_not_there_for_assemble(tmp_path: Path) -> None:
    found = install(tree(tmp_path, {"requirements.txt": "flask\n"}), "requirements.txt\n")
    assert found.tool is None


@pytest.mark.parametrize(
    ("files", "command", "file"),
    [
        ({"Pipfile": "", "requirements.txt": ""}, "pipenv install --deploy", "Pipfile"),
        ({"requirements.txt": ""}, "pipenv install -r requirements.txt", "requirements.txt"),
    ],
)
def test_enable_pipenv(tmp_path: Path, files: dict[str, str], command: str, file: str) -> None:
    found = install(tree(tmp_path, files), ENABLE_PIPENV="1", PIN_PIPENV_VERSION="2024.0.1")
    assert (found.tool, found.file) == ("pipenv", file)
    assert commands(found) == ["pip install -U pipenv==2024.0.1", command]
    assert "ENABLE_PIPENV=1 (.s2i/environment line 1)" in found.steps[0].reason


def test_enable_pipenv_without_files_installs_nothing(tmp_path: Path) -> None:
    found = install(tree(tmp_path, {"app.py": ""}), ENABLE_PIPENV="yes")
    assert found.file is None and "nothing to install" in found.notes[0]


def test_an_empty_flag_is_unset(tmp_path: Path) -> None:
    found = install(tree(tmp_path, {"requirements.txt": ""}), ENABLE_PIPENV="")
    assert found.tool == "pip"


@pytest.mark.parametrize(
    ("present", "chosen"),
    [
        (("Pipfile.lock", "poetry.lock", "requirements.txt"), "Pipfile.lock"),
        (("poetry.lock", "requirements.txt"), "poetry.lock"),
        (("requirements.txt",), "requirements.txt"),
    ],
)
def test_micropipenv_takes_the_first_of_its_files(
    tmp_path: Path, present: tuple[str, ...], chosen: str
) -> None:
    found = install(tree(tmp_path, dict.fromkeys(present, "")), ENABLE_MICROPIPENV="1")
    assert (found.tool, found.file, found.error) == ("micropipenv", chosen, None)
    assert commands(found)[-1] == "micropipenv install --deploy"


def test_micropipenv_without_files_is_expected_to_fail(tmp_path: Path) -> None:
    found = install(tree(tmp_path, {"Pipfile": ""}), ENABLE_MICROPIPENV="1")
    assert found.error is not None and "finds none of" in found.error


def test_both_installers_enabled_stop_assemble(tmp_path: Path) -> None:
    found = install(
        tree(tmp_path, {"requirements.txt": ""}), ENABLE_PIPENV="1", ENABLE_MICROPIPENV="1"
    )
    assert found.error is not None and "exit 3" in found.error and found.steps == ()


def test_upgrade_pip_comes_first(tmp_path: Path) -> None:
    found = install(tree(tmp_path, {"requirements.txt": ""}), UPGRADE_PIP_TO_LATEST="1")
    assert found.upgrade_pip
    assert commands(found) == [
        "pip install -U pip setuptools wheel",
        "pip install -r requirements.txt",
    ]


@pytest.mark.parametrize(
    ("files", "project"),
    [
        ({"setup.py": ""}, "setup.py/setup.cfg"),
        ({"setup.cfg": "", "pyproject.toml": "[build-system]\n"}, "setup.py/setup.cfg"),
        ({"pyproject.toml": "[project]\nname = 'x'\n"}, "pyproject.toml"),
        ({"pyproject.toml": "  [tool.poetry]\n"}, "pyproject.toml"),
        ({"pyproject.toml": "[tool.ruff]\n"}, None),
    ],
)
def test_the_project_itself(tmp_path: Path, files: dict[str, str], project: str | None) -> None:
    found = install(tree(tmp_path, files))
    assert found.project == project
    assert ("pip install ." in commands(found)) is (project is not None)
    if project is None:
        assert "no [build-system], [project] or [tool.poetry]" in found.notes[-1]


@pytest.mark.parametrize(
    ("files", "flag"),
    [
        ({"setup.py": ""}, "DISABLE_SETUP_PY_PROCESSING"),
        ({"pyproject.toml": "[project]\n"}, "DISABLE_PYPROJECT_TOML_PROCESSING"),
    ],
)
def test_disabled_project_install(tmp_path: Path, files: dict[str, str], flag: str) -> None:
    found = install(tree(tmp_path, files), **{flag: "1"})
    assert found.project is None and f"{flag}=1" in found.notes[-1]


def test_django_gets_collectstatic_in_app_home(tmp_path: Path) -> None:
    root = tree(
        tmp_path, {"requirements.txt": "-r reqs/base.txt\n", "reqs/base.txt": "Django>=4\n"}
    )
    found = install(root, APP_HOME="site")
    assert found.collectstatic and commands(found)[-1] == "python manage.py collectstatic --noinput"
    reason = found.steps[-1].reason
    assert "Django is named in reqs/base.txt" in reason and "in site" in reason
    assert "no site/manage.py: assemble warns" in reason
    tree(tmp_path, {"site/manage.py": ""})
    assert "warns" not in install(root, APP_HOME="site").steps[-1].reason


def test_collectstatic_disabled_or_not_django(tmp_path: Path) -> None:
    root = tree(tmp_path, {"requirements.txt": "django-environ\n# django\n", "manage.py": ""})
    assert not install(root).collectstatic  # names that only look alike
    (root / "requirements.txt").write_text("django\n")
    found = install(root, DISABLE_COLLECTSTATIC="1")
    assert not found.collectstatic and "DISABLE_COLLECTSTATIC=1" in found.notes[-1]


def test_names_finds_a_distribution_in_any_spelling() -> None:
    files = {
        "Pipfile": b'[packages]\nDjango = "*"\n',
        "setup.cfg": b"install_requires =\n    mod-wsgi\n",
        "setup.py": b"setup(name='x')  # gunicorn\n",
    }
    assert names(files, ["setup.py", "Pipfile"], "django") == "Pipfile"
    assert names(files, ["setup.cfg"], "mod_wsgi") == "setup.cfg"
    assert names(files, ["setup.py", "missing"], "gunicorn") is None


# ------------------------------------------------------------------------------ run


GUNICORN = {"requirements.txt": "gunicorn\n"}


def test_gunicorn_conf_with_wsgi_app_wins(tmp_path: Path) -> None:
    root = tree(tmp_path, {**GUNICORN, "gunicorn.conf.py": "wsgi_app = 'a:b'\n", "app.py": ""})
    found = start(root, WEB_CONCURRENCY="3")
    assert (found.kind, found.command) == ("gunicorn", ("gunicorn",))
    assert found.workers == "WEB_CONCURRENCY=3 (.s2i/environment line 1)"


def test_wsgi_app_without_gunicorn_falls_through(tmp_path: Path) -> None:
    root = tree(tmp_path, {"gunicorn.conf.py": "wsgi_app = 'a:b'\n", "app.py": ""})
    assert start(root).kind == "python"


def test_app_sh_is_the_default_script(tmp_path: Path) -> None:
    root = tree(tmp_path, {"app.sh": "", "app.py": ""})
    found = start(root)
    assert (found.kind, found.command) == ("script", ("/bin/bash", "./app.sh"))
    (root / "app.sh").chmod(0o755)
    assert start(root, ENABLE_INIT_WRAPPER="1").command == ("tini", "-g", "--", "./app.sh")


def test_app_py_is_the_default_file(tmp_path: Path) -> None:
    found = start(tree(tmp_path, {**GUNICORN, "app.py": "", "wsgi.py": ""}))
    assert (found.kind, found.target, found.command) == ("python", "app.py", ("python", "app.py"))
    assert "none of APP_SCRIPT, APP_FILE, APP_MODULE is set" in found.reasons[0]


def test_app_module_turns_the_defaults_off(tmp_path: Path) -> None:
    found = start(tree(tmp_path, {**GUNICORN, "app.py": "", "app.sh": ""}), APP_MODULE="pkg:app")
    assert found.kind == "gunicorn" and found.target == "pkg:app"
    assert found.reasons[0] == "APP_MODULE=pkg:app (.s2i/environment line 1)"


@pytest.mark.parametrize(("name", "missing"), [("APP_SCRIPT", "run.sh"), ("APP_FILE", "main.py")])
def test_a_named_missing_file_is_an_error(tmp_path: Path, name: str, missing: str) -> None:
    found = start(tree(tmp_path, {**GUNICORN, "wsgi.py": ""}), **{name: missing})
    assert found.error is not None and f"{name} file '{missing}' not found" in found.error


def test_app_home_moves_the_lookups(tmp_path: Path) -> None:
    root = tree(tmp_path, {**GUNICORN, "app/wsgi.py": ""})
    found = start(root, APP_HOME="app")
    assert (found.directory, found.target) == ("app", "wsgi")
    assert start(root, APP_HOME="/opt/app-root/src/app").directory == "app"
    missing = start(root, APP_HOME="nope")
    assert missing.error is not None and "APP_HOME 'nope' is not a directory" in missing.error
    outside = start(root, APP_HOME="/srv/elsewhere")
    assert outside.command == () and "cannot check" in outside.notes[0]


def test_django_migrates_then_gunicorn(tmp_path: Path) -> None:
    root = tree(tmp_path, {"requirements.txt": "django\ngunicorn\n", "manage.py": ""})
    found = start(root, APP_MODULE="site.wsgi", PORT="9000")
    assert [step.command for step in found.before] == ["python manage.py migrate --noinput"]
    assert found.command == ("gunicorn", "site.wsgi", "--bind=0.0.0.0:9000", "--access-logfile=-")
    assert "Django is installed: requirements.txt names it" in found.assumptions
    skipped = start(root, APP_MODULE="site.wsgi", DISABLE_MIGRATE="1")
    assert skipped.before == () and "DISABLE_MIGRATE=1" in skipped.notes[-1]


def test_django_without_gunicorn_runs_runserver(tmp_path: Path) -> None:
    root = tree(tmp_path, {"requirements.txt": "django\n", "manage.py": "", "wsgi.py": ""})
    found = start(root, PORT="8081", ENABLE_INIT_WRAPPER="1")
    assert found.kind == "runserver"
    assert found.command == ("tini", "-g", "--", "python", "manage.py", "runserver", "0.0.0.0:8081")


@pytest.mark.parametrize(
    ("env", "command"),
    [
        ({"APP_CONFIG": "conf.py"}, ("gunicorn", "wsgi", "--config", "conf.py")),
        ({"GUNICORN_CMD_ARGS": "--workers=2"}, ("gunicorn", "wsgi")),
    ],
)
def test_custom_gunicorn_settings(
    tmp_path: Path, env: dict[str, str], command: tuple[str, ...]
) -> None:
    found = start(tree(tmp_path, {**GUNICORN, "wsgi.py": ""}), **env)
    assert found.command == command and "custom settings" in found.reasons[-1]


def test_the_setup_py_name_is_the_module(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "setup.py": "from setuptools import setup\n"
            "setup(name='myapp', install_requires=['gunicorn'])\n"
        },
    )
    found = start(root)
    assert (found.kind, found.target) == ("gunicorn", "myapp")
    assert "gunicorn is named in setup.py" in found.reasons


def test_a_setup_py_one_level_down_is_found_too(tmp_path: Path) -> None:
    root = tree(tmp_path, {**GUNICORN, "pkg/setup.py": "setup(name=NAME)\n"})
    found = start(root)
    assert found.target == "<the name pkg/setup.py --name prints>"


def test_nothing_to_start_is_runs_error(tmp_path: Path) -> None:
    found = start(tree(tmp_path, {"requirements.txt": "flask\n"}))
    assert found.command == () and found.error is not None
    assert "don't know how to run your application" in found.error
    assert "gunicorn is not installed: no file the installer reads names it" in found.assumptions


# mod_wsgi-express: run serves a module with it when gunicorn is not installed.

MOD_WSGI = {"requirements.txt": "mod_wsgi\nflask\n"}


def test_mod_wsgi_without_gunicorn_serves_wsgi_py(tmp_path: Path) -> None:
    found = start(tree(tmp_path, {**MOD_WSGI, "wsgi.py": ""}), PORT="8081")
    assert (found.kind, found.target, found.error) == ("mod_wsgi", "wsgi.py", None)
    assert found.command == (
        "mod_wsgi-express", "start-server", "wsgi.py", "--port", "8081", "--host", "0.0.0.0",
        "--log-to-terminal", "--access-log", "--processes", run_mirror.WORKERS_COMPUTED,
    )  # fmt: skip
    assert found.reasons == (
        "wsgi.py exists (APP_MODULE is unset)",
        "mod_wsgi is named in requirements.txt; gunicorn is not named",
    )
    assert found.workers == run_mirror.WORKERS_RULE
    assert "mod_wsgi is installed: requirements.txt names it (mod_wsgi-express)" in (
        found.assumptions
    )


def test_mod_wsgi_standalone_brings_mod_wsgi_express_too(tmp_path: Path) -> None:
    files = {"requirements.txt": "mod-wsgi-standalone\n", "wsgi.py": ""}
    found = start(tree(tmp_path, files))
    assert (found.kind, found.target) == ("mod_wsgi", "wsgi.py")


@pytest.mark.parametrize(
    ("module", "entry"),
    [
        ("a.b:app", ("--application-type", "module", "a.b", "--callable-object", "app")),
        ("a.b", ("--application-type", "module", "a.b")),
    ],
)
def test_mod_wsgi_takes_app_module_in_gunicorns_form(
    tmp_path: Path, module: str, entry: tuple[str, ...]
) -> None:
    root = tree(tmp_path, {**MOD_WSGI, "wsgi.py": "", "a/b.py": ""})
    found = start(root, APP_MODULE=module, WEB_CONCURRENCY="3", ENABLE_INIT_WRAPPER="1")
    assert (found.kind, found.target) == ("mod_wsgi", module)
    assert found.command[:5] == ("tini", "-g", "--", "mod_wsgi-express", "start-server")
    assert found.command[5 : 5 + len(entry)] == entry
    assert found.command[5 + len(entry)] == "--port"
    assert found.command[-2:] == ("--processes", "3")
    assert found.workers == "WEB_CONCURRENCY=3 (.s2i/environment line 1)"


def test_mod_wsgi_says_app_config_is_ignored(tmp_path: Path) -> None:
    found = start(tree(tmp_path, {**MOD_WSGI, "wsgi.py": ""}), APP_CONFIG="conf.py")
    assert found.kind == "mod_wsgi"
    assert "APP_CONFIG=conf.py (.s2i/environment line 1) is gunicorn's" in found.notes[-1]
    assert "mod_wsgi-express ignores it" in found.notes[-1]


def test_gunicorn_wins_over_mod_wsgi(tmp_path: Path) -> None:
    root = tree(tmp_path, {"requirements.txt": "mod-wsgi\ngunicorn\n", "wsgi.py": ""})
    found = start(root)
    assert (found.kind, found.target) == ("gunicorn", "wsgi")
    assert found.command[0] == "gunicorn"


def test_django_with_mod_wsgi_serves_before_runserver(tmp_path: Path) -> None:
    root = tree(
        tmp_path, {"requirements.txt": "Django\nmod_wsgi\n", "manage.py": "", "wsgi.py": ""}
    )
    found = start(root)
    assert found.kind == "mod_wsgi" and found.command[2] == "wsgi.py"
    assert [step.command for step in found.before] == ["python manage.py migrate --noinput"]


def test_mod_wsgi_serves_the_setup_py_name(tmp_path: Path) -> None:
    root = tree(tmp_path, {**MOD_WSGI, "setup.py": "setup(name='myapp')\n"})
    found = start(root)
    assert (found.kind, found.target) == ("mod_wsgi", "myapp")
    assert found.command[2:5] == ("--application-type", "module", "myapp")


def test_mod_wsgi_without_a_module_is_runs_error(tmp_path: Path) -> None:
    found = start(tree(tmp_path, {**MOD_WSGI, "templates/index.html": ""}))
    assert found.kind is None and found.error is not None
