"""Which files decide dependencies, when a project cannot split, and the layer's key."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import tree
from hypothesis import given
from hypothesis import strategies as st

from buildpy import dependencies as deps


def test_selects_installer_inputs_and_not_code(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "requirements.txt": "flask\n-r requirements/base.txt\n",
            "requirements/base.txt": "-c ../constraints/pins.txt\nsix\n",
            "constraints/pins.txt": "six==1.16.0\n",
            "requirements-dev.txt": "pytest\n",
            "Pipfile": "[packages]\nflask = '*'\n",
            ".s2i/environment": "A=1\n",
            "pyproject.toml": "[project]\nname='x'\n",
            "app.py": "print()\n",
            "pkg/requirements.txt": "not at the root\n",
        },
    )
    selected = deps.select(root)
    assert selected.files == (  # not .s2i/environment: its installation variables are keyed
        "Pipfile",
        "constraints/pins.txt",
        "pyproject.toml",
        "requirements-dev.txt",
        "requirements.txt",
        "requirements/base.txt",
    )
    assert selected.needs_full_source is None


@pytest.mark.parametrize(
    "line",
    [
        "-e .",
        "--editable=.",
        ".",
        "./libs/pkg",
        "../elsewhere",
        "file:///src/pkg",
        "mypkg @ file:///tmp/src/mypkg",
        "-e ./sub",
        "git+file:///repo#egg=x",
    ],
)
def test_requirements_that_install_the_source_need_it(line: str) -> None:
    reason = deps.requirements_need_source(f"flask\n{line}\n")
    assert reason is not None and "line 2" in reason


@pytest.mark.parametrize(
    "line",
    [
        "flask>=2",
        "django==5.0 # pinned",
        "-e git+https://github.com/x/y#egg=y",
        "--index-url https://mirror/simple",
        "pkg @ https://example.com/pkg.whl",
        "# -e .",
    ],
)
def test_ordinary_requirements_do_not(line: str) -> None:
    assert deps.requirements_need_source(line + "\n") is None


def test_included_file_can_need_the_source(tmp_path: Path) -> None:
    root = tree(tmp_path, {"requirements.txt": "-r more.txt\n", "more.txt": "-e .\n"})
    reason = deps.select(root).needs_full_source
    assert reason is not None and reason.startswith("more.txt line 1")


def test_pipfile_local_path_needs_the_source(tmp_path: Path) -> None:
    root = tree(tmp_path, {"Pipfile": '[packages]\nmine = {path = ".", editable = true}\n'})
    reason = deps.select(root).needs_full_source
    assert reason is not None and "Pipfile line 2" in reason


def test_include_outside_the_source_is_ignored(tmp_path: Path) -> None:
    root = tree(tmp_path / "app", {"requirements.txt": "-r ../../etc/passwd\n"})
    assert deps.select(root).files == ("requirements.txt",)


def test_install_variables_are_only_the_relevant_ones() -> None:
    env = {
        "PIP_INDEX_URL": "u",
        "ENABLE_PIPENV": "1",
        "GREETING": "hi",
        "APP_MODULE": "x",
        "UV_INDEX": "i",
        "PIPENV_VENV_IN_PROJECT": "1",
    }
    assert set(deps.install_variables(env)) == {
        "PIP_INDEX_URL",
        "ENABLE_PIPENV",
        "UV_INDEX",
        "PIPENV_VENV_IN_PROJECT",
    }


names = st.sampled_from(["requirements.txt", "Pipfile", "poetry.lock", "setup.py"])
files = st.dictionaries(names, st.binary(max_size=64), min_size=1)
variables = st.dictionaries(
    st.sampled_from(["PIP_INDEX_URL", "ENABLE_PIPENV"]), st.text(max_size=8)
)


@given(files, variables)
def test_key_is_stable_and_order_free(f: dict[str, bytes], v: dict[str, str]) -> None:
    items = list(f.items())
    assert deps.key("b", items, v) == deps.key(
        "b", list(reversed(items)), dict(reversed(v.items()))
    )


@given(files, variables, st.data())
def test_key_changes_with_any_input(
    f: dict[str, bytes], v: dict[str, str], data: st.DataObject
) -> None:
    base = deps.key("builder", list(f.items()), v)
    name = data.draw(st.sampled_from(sorted(f)))
    changed = {**f, name: f[name] + b"\n"}
    assert deps.key("builder", list(changed.items()), v) != base
    assert deps.key("other-builder", list(f.items()), v) != base
    assert deps.key("builder", list(f.items()), {**v, "PIP_NO_INDEX": "1"}) != base


def test_key_does_not_confuse_boundaries() -> None:
    assert deps.key("b", [("a", b"bc")], {}) != deps.key("b", [("ab", b"c")], {})
    assert deps.key("b", [], {"A": "bc"}) != deps.key("b", [], {"AB": "c"})


def test_requirement_lines_ignore_comments_and_order() -> None:
    files = [
        ("requirements.txt", b"flask  # web\n\n# note\nsix\nflask\n"),
        ("requirements/dev.txt", b"pytest\n"),
        ("Pipfile", b"[packages]\n"),
    ]
    assert deps.requirement_lines(files) == {
        "requirements.txt": ["flask", "six"],
        "requirements/dev.txt": ["pytest"],
    }


@pytest.mark.parametrize(
    ("old", "new", "grows"),
    [
        ({"requirements.txt": ["flask"]}, {"requirements.txt": ["flask", "six"]}, True),
        ({"requirements.txt": ["flask"]}, {"requirements.txt": ["flask"]}, False),
        ({"requirements.txt": ["flask", "six"]}, {"requirements.txt": ["six"]}, False),
        ({"requirements.txt": ["flask==2"]}, {"requirements.txt": ["flask==3", "six"]}, False),
        (
            {"requirements.txt": ["a"]},
            {"requirements.txt": ["a"], "requirements-dev.txt": ["b"]},
            False,
        ),
    ],
)
def test_extends_only_when_lines_are_added(
    old: dict[str, list[str]], new: dict[str, list[str]], grows: bool
) -> None:
    assert deps.extends(deps.record(old), new) is grows


def test_extends_refuses_missing_or_broken_records() -> None:
    assert deps.extends(None, {"requirements.txt": ["a"]}) is False
    assert deps.extends("not json", {"requirements.txt": ["a"]}) is False


def test_fixed_digest_ignores_requirement_lines_only() -> None:
    base = deps.fixed_digest("b", [("requirements.txt", b"flask\n"), ("Pipfile", b"x")], {})
    assert base == deps.fixed_digest("b", [("requirements.txt", b"six\n"), ("Pipfile", b"x")], {})
    assert base != deps.fixed_digest("b", [("requirements.txt", b"six\n"), ("Pipfile", b"y")], {})
    assert base != deps.fixed_digest("b", [("requirements.txt", b"six\n")], {})
    assert base != deps.fixed_digest(
        "b", [("requirements.txt", b"x"), ("Pipfile", b"x")], {"PIP_X": "1"}
    )


def test_large_requirement_sets_are_not_recorded() -> None:
    big = {"requirements.txt": [f"package-{i}" for i in range(2000)]}
    assert deps.record(big) is None
    assert deps.can_grow({"ENABLE_PIPENV": "1"}) is False
    assert deps.can_grow({"PIP_INDEX_URL": "x"}) is True


def test_added_lines_are_those_a_grown_layer_adds() -> None:
    old = deps.record({"requirements.txt": ["flask"], "requirements-dev.txt": ["pytest"]})
    new = {"requirements.txt": ["flask", "six"], "requirements-dev.txt": ["attrs", "pytest"]}
    assert deps.added(old, new) == ["attrs", "six"]
    assert deps.added(old, {**new, "requirements.txt": ["flask", "--pre"]}) == []  # an option
    assert deps.added(old, {**new, "requirements.txt": ["flask", "-r more.txt"]}) == []
    assert deps.added("not json", new) == []
    assert deps.added(None, {"requirements.txt": ["a"]}) == ["a"]


def test_ignored_files_are_no_dependency_files(tmp_path: Path) -> None:
    from buildpy.source import IgnoreRules

    (tmp_path / ".s2i").mkdir()
    (tmp_path / ".s2i" / "environment").write_text("A=1\n")
    (tmp_path / "requirements.txt").write_text("flask\n-r extra/reqs.txt\n")
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "reqs.txt").write_text("six\n")
    (tmp_path / "Pipfile").write_text("[packages]\n")
    rules = IgnoreRules.from_text(".s2i/\nextra/\nPipfile\n")
    assert deps.select(tmp_path, rules).files == ("requirements.txt",)
    assert deps.select(tmp_path).files == (
        "Pipfile",
        "extra/reqs.txt",
        "requirements.txt",
    )


def test_recorded_lines_keep_no_credentials() -> None:
    secret = "--extra-index-url https://user:s3cr3t-token@mirror.example/simple"
    recorded = deps.record({"requirements.txt": [secret, "flask"]})
    assert recorded is not None and "s3cr3t" not in recorded and "flask" not in recorded
    assert deps.extends(recorded, {"requirements.txt": [secret, "flask", "six"]}) is True
    assert deps.added(recorded, {"requirements.txt": [secret, "flask", "six"]}) == ["six"]


def test_line_changes_count_added_and_removed_lines_per_file() -> None:
    old = deps.record({"requirements.txt": ["flask", "six"], "requirements-dev.txt": ["pytest"]})
    new = {"requirements.txt": ["flask", "attrs", "click"], "requirements-test.txt": ["x"]}
    assert deps.line_changes(old, new) == {
        "requirements-dev.txt": (0, 1),
        "requirements-test.txt": (1, 0),
        "requirements.txt": (2, 1),
    }
    assert deps.line_changes(None, new) is None
    assert deps.line_changes("[]", new) is None


def digests(
    files: dict[str, bytes], variables: dict[str, str], builder: str = "sha256:b"
) -> deps.InputDigests:
    return deps.InputDigests.of("/src/app", builder, sorted(files.items()), variables)


def test_input_digests_say_which_input_changed_without_values() -> None:
    old = digests(
        {"requirements.txt": b"flask\n", "Pipfile": b"x", ".s2i/environment": b"A=1\n"},
        {"PIP_INDEX_URL": "https://user:s3cret@mirror/simple", "PIP_NO_INDEX": "1"},
    )
    label = old.label()
    assert label is not None and "s3cret" not in label and "flask" not in label
    assert "mirror" not in label and "/src/app" not in label
    assert deps.InputDigests.from_label(label) == old
    new = digests(
        {"requirements.txt": b"flask\nsix\n", ".s2i/environment": b"A=1\n", "poetry.lock": b""},
        {"PIP_INDEX_URL": "https://user:other@mirror/simple", "PIP_TIMEOUT": "5"},
        builder="sha256:rebuilt",
    )
    assert [str(change) for change in new.changes_since(old)] == [
        "the builder changed",
        "Pipfile removed",
        "poetry.lock added",
        "requirements.txt changed",
        "PIP_INDEX_URL changed",
        "PIP_NO_INDEX unset",
        "PIP_TIMEOUT set",
    ]
    assert old.changes_since(old) == []


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "nope",
        "[]",
        '{"source": "x"}',
        '{"source": 1, "builder": 2, "files": [], "variables": {}}',
    ],
)
def test_input_digests_refuse_what_they_did_not_write(text: str | None) -> None:
    assert deps.InputDigests.from_label(text) is None


def test_input_digests_are_not_kept_when_too_large() -> None:
    many = {f"PIP_X{i}": "v" for i in range(1000)}
    assert digests({}, many).label() is None
