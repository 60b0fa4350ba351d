"""Every shell block in README.md and docs/ runs as written, or says why not.

A fenced block marked ```sh, ```bash or ```console (the lines after ``$ ``; the others are
output) in README.md or any page under docs/ is either run here against real Podman, or
preceded by one of these comments, on the line right before the fence:

- ``<!-- not run in CI: REASON -->``: an explicit excuse, with its reason (a host that CI
  is not, a registry CI cannot reach, a synopsis rather than a command, ...);
- ``<!-- run in CI by tests/integration/TEST.py -->``: another test runs it as written
  (that file must exist and name the page).

All the blocks of one page run in order in one ``bash -euo pipefail``, as a reader types
them one after the other, in a copy of examples/hello-flask (the reader's application
directory), with buildpy's virtualenv first on PATH (the tutorial tells the reader to put
it there) and the Podman service of this test session. Builder names follow
BUILDPY_BUILDER_PREFIX, as in test_offline_howto. Images a page tags and containers it
names are removed afterwards. Blocks of other languages (yaml, toml, json, text) are not
shell and are not run. New pages and new blocks are picked up by themselves: a new shell
block that is neither run nor excused fails, as does an excuse without a reason.

Nothing here reads buildpy's log lines: only exit statuses, stdout and the images made.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import BUILDER_PREFIX, HOST_CA, ROOT, built_images
from itest import shell_env

SHELL = ("sh", "bash", "console")
FENCE = re.compile(r"^(\s*)```(\S*)(.*)$")
EXCUSE = re.compile(r"^<!--\s*not run in CI:(.*?)-->\s*$")
ELSEWHERE = re.compile(r"^<!--\s*run in CI by (\S+)\s*-->\s*$")
EXAMPLE = ROOT / "examples" / "hello-flask"
# What a page's commands print on stdout, in order, where the page says what it shows (the
# tutorial's app greets with GREETING): checked as well as the exit status.
SHOWN = {
    "README.md": ["localhost/myapp\n", "Hello from buildpy!\n"],
    "docs/tutorial.md": ["hello\n", "Hi\n", "Hey\n"],
    "docs/how-to/migrate-from-s2i.md": [
        "run from --scripts-url file://../s2iscripts",
        "localhost/myapp\n",
        "Hello from buildpy!\n",
        "starting through --scripts-url's run",
    ],
}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    marker: str  # the line before the fence

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def excuse(self) -> str | None:
        found = EXCUSE.match(self.marker)
        return None if found is None else found.group(1).strip()

    @property
    def elsewhere(self) -> str | None:
        found = ELSEWHERE.match(self.marker)
        return None if found is None else found.group(1)

    @property
    def runs_here(self) -> bool:
        return self.excuse is None and self.elsewhere is None

    def commands(self) -> str:
        """The block as a script: a console block's ``$ `` lines and their continuations."""
        if self.language != "console":
            return self.text
        kept: list[str] = []
        going_on = False
        for line in self.text.splitlines():
            if line.startswith("$ ") or going_on:
                kept.append(line[2:] if line.startswith("$ ") and not going_on else line)
                going_on = line.rstrip().endswith("\\")
        return "\n".join(kept) + "\n"


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(page: Path) -> list[Block]:
    """The page's fenced blocks of shell, in order."""
    lines = page.read_text().splitlines()
    found = []
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        indent, language = fence.group(1), fence.group(2)
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        body = "\n".join(line[len(indent) :] for line in lines[index + 1 : end]) + "\n"
        marker = next((lines[i].strip() for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        if language in SHELL:
            found.append(Block(page, index + 1, language, body, marker))
        index = end + 1
    return found


def all_blocks() -> list[Block]:
    return [block for page in pages() for block in blocks(page)]


def runnable_pages() -> list[Path]:
    return [page for page in pages() if any(block.runs_here for block in blocks(page))]


# ------------------------------------------------------------------------------ the rules


def test_the_pages_have_shell_blocks_and_most_run() -> None:
    found = all_blocks()
    assert len(found) >= 20
    assert sum(block.runs_here for block in found) >= 5
    assert ROOT / "docs" / "tutorial.md" in runnable_pages()


@pytest.mark.parametrize("block", all_blocks(), ids=lambda block: block.where)
def test_each_block_is_run_or_excused_with_a_reason(block: Block) -> None:
    if block.marker.startswith("<!--") and block.runs_here:
        pytest.fail(f"{block.where}: a comment that is no CI marker before a shell block")
    if block.excuse is not None:
        assert len(block.excuse) >= 10, f"{block.where}: an excuse needs its reason"
    if block.elsewhere is not None:
        test = ROOT / block.elsewhere
        assert test.is_file(), f"{block.where}: no {block.elsewhere}"
        assert block.page.name in test.read_text(), f"{block.elsewhere} never names the page"


def test_a_console_block_keeps_only_commands() -> None:
    block = Block(ROOT, 1, "console", "$ echo a \\\n  b\na b\n$ true\n", "")
    assert block.commands() == "echo a \\\n  b\ntrue\n"


def test_a_block_without_marker_is_run_and_a_bare_comment_is_not_an_excuse(
    tmp_path: Path,
) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- not run in CI: needs a RHEL host -->\n```sh\nx\n```\n\n"
        "<!-- not run in CI: -->\n```console\n$ y\n```\n```sh\nz\n```\n```yaml\na: 1\n```\n"
    )
    first, second, third = blocks(page)
    assert first.excuse == "needs a RHEL host" and not first.runs_here
    assert second.excuse == ""  # refused by the rule above: no reason
    assert third.runs_here and third.marker == "```"


# ------------------------------------------------------------------------------ running


def names(script: str, option: str) -> set[str]:
    """The values a script gives ``option`` (``--tag X``, ``--tag=X``, ``--name X``)."""
    pattern = rf"(?:^|\s){re.escape(option)}[ =]\"?([^\s\"]+)"
    return {value for value in re.findall(pattern, script) if "$" not in value}


@pytest.mark.parametrize("page", runnable_pages(), ids=lambda page: str(page.relative_to(ROOT)))
def test_the_page_runs_as_written(page: Path, podman_url: str, tmp_path: Path) -> None:
    if not HOST_CA.is_file():
        pytest.fail(f"{HOST_CA} is missing: the pages' builds reach PyPI through it")
    script = "".join(block.commands() for block in blocks(page) if block.runs_here)
    script = script.replace("localhost/buildpy/", f"{BUILDER_PREFIX}/")
    app = tmp_path / "myapp"
    shutil.copytree(EXAMPLE, app)
    env = shell_env(podman_url)
    tags = names(script, "--tag") | names(script, "-t")
    containers = names(script, "--name")
    made: list[str] = []  # every image the page built: a tag built twice leaves the first
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=app,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        made = built_images(done.stderr)
        assert done.returncode == 0, (
            f"{page.relative_to(ROOT)} failed as written ({done.returncode}):\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
        at = 0
        for shown in SHOWN.get(str(page.relative_to(ROOT)), []):
            found = done.stdout.find(shown, at)
            assert found >= 0, f"{page.relative_to(ROOT)} never showed {shown!r}:\n{done.stdout}"
            at = found + len(shown)
    finally:
        for name in containers:
            subprocess.run(["podman", "rm", "-f", "-t", "2", name], capture_output=True)
        for tag in [*tags, *made]:
            subprocess.run(["podman", "rmi", "-f", tag], capture_output=True)
