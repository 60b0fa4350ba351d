"""uv.lock and poetry.lock: the installer the plan names, the pins s2i/poetry-requirements
reads from poetry.lock, and when a lock file needs the whole source.

tests/integration/test_s2i_apps.py builds tests/apps/uv-lock and tests/apps/poetry-lock and
holds the plan to what assemble did.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fakes import tree

from buildpy import assemble_mirror, cache, dependencies, session
from buildpy.environment import Resolved
from buildpy.mirror import SourceView, Variables

ROOT = Path(__file__).resolve().parents[2]
APPS = ROOT / "tests" / "apps"
POETRY_REQUIREMENTS = ROOT / "s2i" / "poetry-requirements"

UV_VIRTUAL = 'version = 1\n[[package]]\nname = "app"\nsource = { virtual = "." }\n'
UV_EDITABLE = 'version = 1\n[[package]]\nname = "app"\nsource = { editable = "." }\n'


def install(root: Path, **env: str) -> assemble_mirror.Install:
    files = dict(dependencies.select(root).contents)
    values = Variables({k: Resolved(v, ".s2i/environment", 1) for k, v in env.items()})
    return assemble_mirror.decide(SourceView(root), values, files)


def commands(found: assemble_mirror.Install) -> list[str]:
    return [step.command for step in found.steps]


# ------------------------------------------------------------------------ the plan


def test_uv_lock_means_uv_and_a_virtual_project_is_not_installed(tmp_path: Path) -> None:
    found = install(tree(tmp_path, {"pyproject.toml": "[project]\n", "uv.lock": UV_VIRTUAL}))
    assert (found.tool, found.file, found.project, found.error) == ("uv", "uv.lock", None, None)
    assert commands(found)[0] == "pip install --target /tmp/buildpy-tools/uv uv"
    assert commands(found)[1].startswith("uv export --locked --offline --no-emit-project")
    assert {"uv.lock", "pyproject.toml"} <= set(found.reads)
    assert any("marks it virtual" in note for note in found.notes)


def test_uv_lock_with_a_packaged_project_installs_it_too(tmp_path: Path) -> None:
    pyproject = "[project]\nname = 'app'\n[build-system]\nrequires = ['hatchling']\n"
    found = install(
        tree(tmp_path, {"pyproject.toml": pyproject, "uv.lock": UV_EDITABLE}),
        PIN_UV_VERSION="0.9.1",
    )
    assert (found.tool, found.project) == ("uv", "pyproject.toml")
    assert commands(found) == [
        "pip install --target /tmp/buildpy-tools/uv uv==0.9.1",
        commands(found)[1],
        "pip install .",
    ]
    assert "PIN_UV_VERSION=0.9.1 (.s2i/environment line 1)" in found.steps[0].reason


def test_uv_lock_without_pyproject_is_expected_to_fail(tmp_path: Path) -> None:
    found = install(tree(tmp_path, {"uv.lock": UV_VIRTUAL}))
    assert found.tool == "uv" and found.error is not None and "pyproject.toml" in found.error


def test_poetry_lock_means_pip_with_its_pins_then_the_project(tmp_path: Path) -> None:
    pyproject = "[tool.poetry]\nname = 'app'\n[build-system]\nrequires = ['poetry-core']\n"
    found = install(tree(tmp_path, {"pyproject.toml": pyproject, "poetry.lock": ""}))
    assert (found.tool, found.file, found.project) == ("pip", "poetry.lock", "pyproject.toml")
    assert commands(found)[0].startswith("pip install --no-deps -r <poetry.lock")
    assert "no micropipenv" in found.steps[0].reason


def test_a_poetry_application_not_a_package_is_not_installed(tmp_path: Path) -> None:
    pyproject = "[tool.poetry]\npackage-mode = false\n[build-system]\nrequires = ['poetry-core']\n"
    found = install(tree(tmp_path, {"pyproject.toml": pyproject, "poetry.lock": ""}))
    assert (found.tool, found.file, found.project) == ("pip", "poetry.lock", None)
    assert any("package-mode = false" in note for note in found.notes)
    # micropipenv (as sclorg's image) leaves the project to pip install ., as before.
    assert install(tmp_path, ENABLE_MICROPIPENV="1").project == "pyproject.toml"


@pytest.mark.parametrize(
    ("files", "tool", "file", "note"),
    [
        # sclorg's image installs requirements.txt: a source with both keeps doing so.
        (("requirements.txt", "uv.lock"), "pip", "requirements.txt", "uv.lock not used"),
        (("requirements.txt", "poetry.lock"), "pip", "requirements.txt", "poetry.lock not used"),
        (("uv.lock", "poetry.lock"), "uv", "uv.lock", "poetry.lock not used"),
    ],
)
def test_which_file_comes_first(
    tmp_path: Path, files: tuple[str, ...], tool: str, file: str, note: str
) -> None:
    found = install(tree(tmp_path, {"pyproject.toml": "", **dict.fromkeys(files, "")}))
    assert (found.tool, found.file) == (tool, file)
    assert any(note in n for n in found.notes), found.notes


def test_enable_micropipenv_still_installs_poetry_lock_with_micropipenv(tmp_path: Path) -> None:
    found = install(tree(tmp_path, {"poetry.lock": "", "uv.lock": ""}), ENABLE_MICROPIPENV="1")
    assert (found.tool, found.file) == ("micropipenv", "poetry.lock")


@pytest.mark.parametrize(
    ("app", "tool", "file", "project"),
    [("uv-lock", "uv", "uv.lock", None), ("poetry-lock", "pip", "poetry.lock", "pyproject.toml")],
)
def test_the_lock_apps(app: str, tool: str, file: str, project: str | None) -> None:
    found = install(APPS / app)
    assert (found.tool, found.file, found.project, found.error) == (tool, file, project, None)
    assert dependencies.select(APPS / app).needs_full_source is None  # two phases


# ------------------------------------------------------------ the dependency layer


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("uv.lock", UV_EDITABLE + UV_VIRTUAL, None),
        ("uv.lock", 'source = { editable = "packages/lib" }\n', "installs packages/lib"),
        ("uv.lock", 'source = { path = "../wheels/x.whl" }\n', "installs ../wheels/x.whl"),
        ("uv.lock", 'source = { virtual = "./member" }\n', "installs ./member"),
        ("poetry.lock", '[package.source]\ntype = "legacy"\nurl = "x"\n', None),
        ("poetry.lock", '[package.source]\ntype = "directory"\nurl = "lib"\n', "local directory"),
    ],
)
def test_a_lock_with_a_local_path_needs_the_whole_source(
    tmp_path: Path, name: str, text: str, reason: str | None
) -> None:
    found = dependencies.select(tree(tmp_path, {name: text, "pyproject.toml": ""}))
    if reason is None:
        assert found.needs_full_source is None
    else:
        assert found.needs_full_source is not None and reason in found.needs_full_source


def test_uv_pin_is_keyed_and_uv_cache_is_not() -> None:
    env = {"PIN_UV_VERSION": "0.9.1", "UV_CACHE_DIR": "/x", "UV_INDEX_URL": "https://m/simple"}
    assert dependencies.layer_variables(env) == {
        "PIN_UV_VERSION": "0.9.1",
        "UV_INDEX_URL": "https://m/simple",
    }
    assert cache.download_variables("0" * 16)["UV_CACHE_DIR"].startswith(cache.DOWNLOADS_TARGET)


# ------------------------------------------------------ s2i/poetry-requirements


def requirements(lock: Path, pyproject: Path | None = None) -> list[str]:
    args = [sys.executable, str(POETRY_REQUIREMENTS), str(lock)]
    args += [str(pyproject)] if pyproject else []
    done = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.splitlines()


def test_the_poetry_app_lock_gives_exact_main_pins_with_hashes() -> None:
    lines = requirements(APPS / "poetry-lock" / "poetry.lock")
    pins = [line.split(" ")[0] for line in lines]
    assert "flask==3.0.0" in pins and "werkzeug==3.0.1" in pins
    assert not any(pin.startswith("six") for pin in pins)  # the dev group
    assert all("--hash=sha256:" in line for line in lines)
    zipp = next(line for line in lines if line.startswith("zipp=="))
    assert ' ; python_version == "3.9" --hash=' in zipp


def test_an_older_lock_is_walked_from_pyproject(tmp_path: Path) -> None:
    """Lock-version 2.0 has no groups: the main dependencies' graph gives the same set."""
    text = (APPS / "poetry-lock" / "poetry.lock").read_text()
    old = "\n".join(
        line for line in text.splitlines() if not line.startswith(("groups = ", "markers = "))
    )
    (tmp_path / "poetry.lock").write_text(
        old.replace('lock-version = "2.1"', 'lock-version = "2.0"')
    )
    (tmp_path / "pyproject.toml").write_text((APPS / "poetry-lock" / "pyproject.toml").read_text())
    walked = requirements(tmp_path / "poetry.lock")
    grouped = requirements(APPS / "poetry-lock" / "poetry.lock")
    assert [line.split(" ")[0] for line in walked] == [line.split(" ")[0] for line in grouped]
    zipp = next(line for line in walked if line.startswith("zipp=="))
    assert 'python_version < "3.10"' in zipp  # flask's edge to importlib-metadata


def test_sources_become_indexes_and_direct_references(tmp_path: Path) -> None:
    lock = """
[[package]]
name = "private-lib"
version = "1.0"
groups = ["main"]
files = [{file = "private_lib-1.0-py3-none-any.whl", hash = "sha256:aa"}]
[package.source]
type = "legacy"
url = "https://packages.example/simple"
reference = "private"

[[package]]
name = "public-lib"
version = "2.0"
groups = ["main"]
files = [{file = "public_lib-2.0-py3-none-any.whl", hash = "sha256:bb"}]
[package.source]
type = "legacy"
url = "https://pypi.org/simple"
reference = "pypi"

[[package]]
name = "from-git"
version = "0.1"
groups = ["main"]
files = []
[package.source]
type = "git"
url = "https://git.example/repo.git"
reference = "main"
resolved_reference = "abc123"

[[package]]
name = "local-lib"
version = "0.2"
groups = ["main"]
files = []
[package.source]
type = "directory"
url = "libs/local"

[metadata]
lock-version = "2.1"
"""
    (tmp_path / "poetry.lock").write_text(lock)
    assert requirements(tmp_path / "poetry.lock") == [
        "--extra-index-url https://packages.example/simple",
        "from-git @ git+https://git.example/repo.git@abc123",
        f"local-lib @ file://{tmp_path}/libs/local",
        "private-lib==1.0",  # pip checks every line's hashes or none
        "public-lib==2.0",
    ]


def test_uv_gives_up_as_quickly_as_pip_and_that_is_not_keyed() -> None:
    assert session.FAIL_FAST["UV_HTTP_RETRIES"] == session.FAIL_FAST["PIP_RETRIES"]
    assert session.FAIL_FAST["UV_HTTP_TIMEOUT"] == session.FAIL_FAST["PIP_TIMEOUT"]
    assert dependencies.layer_variables(session.FAIL_FAST) == {}
