"""Failure battery, source: what buildpy does with the directory it is given.

Errors about the source are found before any engine work (the tripwire is never
contacted). A tree with odd things in it builds: symlinks pointing out of the tree are
kept as links, odd file names arrive exactly, sockets and FIFOs are skipped with a
warning, a huge or sparse file is warned about.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from battery import APP_PY, BUILDER, Case, Failure, Outcome, image_root, params, unreadable
from storage import LOCAL_PODMAN

from buildpy import source

pytestmark = pytest.mark.rootless

HINT_CHMOD = "make it readable (chmod u+r) or list it in .s2iignore"
HINT_PATTERN = "fix the pattern: a character range goes from low to high"


def dangling(app: Path) -> None:
    (app.parent / "dangling").symlink_to(app.parent / "nowhere")


def unreadable_file(id: str, name: str, content: str, hint: str = HINT_CHMOD) -> Failure:
    """A source whose file ``name`` nobody may read."""
    return Failure(
        f"unreadable-{id}",
        3,
        f"cannot read {{app}}/{name}: Permission denied",
        hint,
        files={"app.py": APP_PY, name: content},
        setup=unreadable(name),
        no_dac=True,
    )


SOURCE_CASES = [
    Failure(
        "missing-directory",
        3,
        "source directory {dir}/nope does not exist",
        "check the path; a relative path starts at the current directory",
        source="{dir}/nope",
    ),
    Failure(
        "file-not-directory",
        3,
        "source {app}/app.py is not a directory",
        "pass the directory that holds your application",
        source="{app}/app.py",
    ),
    Failure(
        "dangling-symlink-as-source",
        3,
        "source directory {dir}/dangling does not exist",
        "check the path",
        setup=dangling,
        source="{dir}/dangling",
    ),
    Failure(
        "unreadable-source-directory",
        3,
        "cannot read directory {app}: Permission denied",
        "make it readable (chmod u+rx)",
        setup=lambda app: app.chmod(0o300),
        no_dac=True,
    ),
    Failure(
        "unsearchable-source-directory",
        3,
        "cannot read directory {app}: Permission denied",
        "make it readable (chmod u+rx)",
        files={"app.py": APP_PY, ".s2iignore": "*.log\n"},
        setup=lambda app: app.chmod(0),
        no_dac=True,
    ),
    unreadable_file("file", "secret.txt", "s3cr3t\n"),
    Failure(
        "unreadable-subdirectory",
        3,
        "cannot read directory {app}/private: Permission denied",
        "make it readable (chmod u+rx) or list it in .s2iignore",
        files={"app.py": APP_PY, "private/key.pem": "k\n"},
        setup=unreadable("private"),
        no_dac=True,
    ),
    unreadable_file("own-assemble", ".s2i/bin/assemble", "#!/bin/sh\n"),
    unreadable_file("requirements", "requirements.txt", "six\n"),
    unreadable_file("pyproject", "pyproject.toml", "[project]\n", "make it readable (chmod u+r)"),
    unreadable_file("s2iignore", ".s2iignore", "*.log\n", "make it readable, or remove it"),
    Failure(
        "unreadable-but-ignored-file-passes",
        5,
        "no Podman service answers at CONTAINER_HOST=",
        "unset CONTAINER_HOST to let buildpy start a private service",
        files={"app.py": APP_PY, "secret.txt": "s3cr3t\n", ".s2iignore": "secret.txt\n"},
        setup=unreadable("secret.txt"),
        no_dac=True,
        engine=True,
    ),
    Failure(
        "s2iignore-reversed-range",
        3,
        ".s2iignore, line 3: bad pattern '[z-a].txt' (bad character range z-a",
        HINT_PATTERN,
        files={"app.py": APP_PY, ".s2iignore": "# comment\n*.log\n[z-a].txt\n"},
    ),
    Failure(
        "s2iignore-trailing-backslash",
        3,
        ".s2iignore, line 1: bad pattern 'build\\\\' (a \\ at the end or before / escapes nothing)",
        "write \\\\ for a literal backslash",
        files={"app.py": APP_PY, ".s2iignore": "build\\\n"},
    ),
    Failure(
        "s2iignore-bad-line-counted-through-bom-and-crlf",
        3,
        ".s2iignore, line 4: bad pattern '[9-0]'",
        HINT_PATTERN,
        files={"app.py": APP_PY, ".s2iignore": b"\xef\xbb\xbf*.pyc\r\n\r\n!keep.pyc\r\n[9-0]\r\n"},
    ),
    Failure(
        "s2iignore-bad-negated-pattern",
        3,
        ".s2iignore, line 2: bad pattern '!data/[b-a]*'",
        HINT_PATTERN,
        files={"app.py": APP_PY, ".s2iignore": "data/\n!data/[b-a]*\n"},
    ),
]


@pytest.mark.parametrize("row", params(SOURCE_CASES))
def test_source_errors_before_the_engine(case: Case, row: Failure) -> None:
    row.check(case)


# --------------------------------------------------------------------------- odd trees

ODD_NAMES = {
    "space": "with space.txt",
    "newline": "new\nline.txt",
    "tab": "tab\there",
    "unicode": "ünïcödé.txt",
    "emoji": "snake 🐍.py",
    "leading-dash": "-rf",
    "glob-characters": "*star?[x]",
    "backslash": "back\\slash",
    "quotes": "quote'\"s",
    "hash": "#not-a-comment",
    "colon": "colon:name",
    "long-name": "n" * 200 + ".txt",
    "not-utf8": os.fsdecode(b"latin1-\xe9t\xe9.txt"),
}
LINKS = {
    "absolute-out-of-tree": "/etc/passwd",
    "relative-out-of-tree": "../../../outside",
    "dangling": "nowhere",
    "to-a-directory": "/etc",
}


def _odd_tree(case: Case, name: str, files: Mapping[str, str | bytes]) -> Path:
    app = case.app({"app.py": APP_PY, **files}, name=name)
    for odd in ODD_NAMES.values():
        (app / odd).write_text(f"content of {odd!r}\n")
    for link, target in LINKS.items():
        (app / link).symlink_to(target)
    os.mkfifo(app / "a-fifo")
    holder = socket.socket(socket.AF_UNIX)
    holder.bind(str(app / "a-socket"))
    holder.close()
    return app


@pytest.fixture(scope="module")
def odd_builds(podman_url: str) -> Iterator[dict[str, tuple[Outcome, str]]]:
    """The same odd tree built twice: once copied by assemble (no dependencies), once
    placed by buildpy into the dependency layer (assemble has nothing left to run)."""
    case = Case(podman_url)
    index = case.index()
    built: dict[str, tuple[Outcome, str]] = {}
    try:
        for way, files in (
            ("assembled", {}),
            ("placed", {"requirements.txt": f"six\n# {case.marker}\n"}),
        ):
            app = _odd_tree(case, way, files)
            tag = case.tag(way)
            extra = index.pip_args() if files else []
            outcome = case.run(str(app), "--builder", BUILDER, "--tag", tag, *extra)
            built[way] = (outcome, tag)
        yield built
    finally:
        case.close()


@pytest.fixture(params=["assembled", "placed"])
def odd_build(
    request: pytest.FixtureRequest, odd_builds: dict[str, tuple[Outcome, str]]
) -> tuple[Outcome, str]:
    outcome, tag = odd_builds[request.param]
    outcome.expect_success(tag)
    return outcome, tag


@pytest.mark.parametrize("name", list(ODD_NAMES.values()), ids=list(ODD_NAMES))
def test_odd_file_names_arrive_exactly(odd_build: tuple[Outcome, str], name: str) -> None:
    _, tag = odd_build
    with image_root(tag) as root:
        path = root / "opt/app-root/src" / name
        assert path.read_text() == f"content of {name!r}\n"


@pytest.mark.parametrize("link", list(LINKS), ids=list(LINKS))
def test_symlinks_out_of_the_tree_stay_links(odd_build: tuple[Outcome, str], link: str) -> None:
    _, tag = odd_build
    with image_root(tag) as root:
        assert os.readlink(root / "opt/app-root/src" / link) == LINKS[link]


@pytest.mark.parametrize("special", ["a-fifo", "a-socket"])
def test_sockets_and_fifos_are_skipped_with_a_warning(
    odd_build: tuple[Outcome, str], special: str
) -> None:
    outcome, tag = odd_build
    assert (
        f"skipping {special}: sockets, FIFOs and device files cannot be archived"
        in outcome.warnings()
    )
    with image_root(tag) as root:
        assert not os.path.lexists(root / "opt/app-root/src" / special)


# --------------------------------------------------------------------------- large trees


def _large_tree(app: Path) -> None:
    """Over ``source.SPLIT_BYTES`` in large and small files, an empty directory, a
    symlink; each directory's mtime set apart, after its files."""
    big = app / "big"
    big.mkdir(mode=0o750)
    for i in range(3):
        (big / f"blob-{i}.bin").write_bytes(os.urandom(12 * 2**20))
    for i in range(5):
        folder = app / "small" / f"d{i}"
        folder.mkdir(parents=True)
        for j in range(40):
            (folder / f"f{j}.txt").write_bytes(os.urandom(1024))
    (app / "empty").mkdir()
    (app / "small" / "to-big").symlink_to("../big")
    for number, rel in enumerate(["big", "empty", "small", *(f"small/d{i}" for i in range(5))]):
        mtime = 1_500_000_000 + number * 86_400
        os.utime(app / rel, (mtime, mtime))


@pytest.mark.parametrize("way", ["assembled", "placed"])
def test_a_large_tree_arrives_whole_with_its_directories_as_they_were(case: Case, way: str) -> None:
    """A source this large goes up in parallel streams, its directories last (their
    mtimes would otherwise be the upload's time): the image holds it exactly, whether
    assemble moves it into place or buildpy places it (a dependency layer and nothing
    left to run)."""
    files = {"requirements.txt": f"six\n# {case.marker}\n"} if way == "placed" else {}
    app = case.app({"app.py": APP_PY, **files}, name=f"large-{way}")
    _large_tree(app)
    size = source.check_tree(app, source.IgnoreRules())
    assert size.bytes >= source.SPLIT_BYTES
    tag = case.tag(f"large-{way}")
    extra = case.index().pip_args() if files else []
    outcome = case.run("-v", str(app), "--builder", BUILDER, "--tag", tag, *extra)
    outcome.expect_success(tag)
    uploads = [e for e in outcome.logged("uploaded") if e["bytes"] > size.bytes]
    assert [e["streams"] for e in uploads] == [source.upload_parts(size) + 1]
    assert _image_tree(tag) == _source_tree(app)


_LIST = (
    "cd /opt/app-root/src && find . -mindepth 1 -printf '%y %P %Ts %l\\n'"
    " && find . -type f -exec sha256sum {} +"
)


def _image_tree(tag: str) -> list[str]:
    """Every entry under the image's $HOME (kind, path, mtime, link), then the files'
    digests, from a container of the image (as rootless as the build)."""
    run = [*LOCAL_PODMAN, "run", "--rm", "--network", "none", "--entrypoint", "sh", tag]
    done = subprocess.run([*run, "-c", _LIST], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return sorted(done.stdout.splitlines())


def _source_tree(app: Path) -> list[str]:
    """The same listing of the source directory."""
    done = subprocess.run(
        ["sh", "-c", _LIST.replace("/opt/app-root/src", str(app))], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return sorted(done.stdout.splitlines())


# --------------------------------------------------------------------------- large files

LARGE = 256 * 1024 * 1024


def sparse(app: Path) -> None:
    with open(app / "disk.img", "wb") as handle:
        handle.truncate(LARGE)


def allocated(app: Path) -> None:
    with open(app / "data.bin", "wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, LARGE)


@pytest.mark.parametrize(
    ("setup", "warning"),
    [
        pytest.param(
            sparse,
            "disk.img is sparse: 256 MiB long but 0 MiB on disk; it is uploaded",
            id="sparse",
        ),
        pytest.param(
            allocated,
            "data.bin is 256 MiB: uploading it takes a while",
            id="large",
        ),
    ],
)
def test_huge_files_are_warned_about_before_the_engine(
    case: Case, setup: Callable[[Path], None], warning: str
) -> None:
    row = Failure(
        "huge",
        5,
        "no Podman service answers",
        "unset CONTAINER_HOST",
        setup=setup,
        engine=True,
    )
    outcome = row.check(case)
    (said,) = [w for w in outcome.warnings() if warning in w]
    assert "or list it in .s2iignore" in said
