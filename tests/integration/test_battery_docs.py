"""The battery's expectations against the documentation.

Every exit code the battery sees is in docs/reference/exit-codes.md, every code there
(but 1, a bug) is seen by the battery, and docs/how-to/troubleshooting.md shows every
hint the battery sees, in the section of its exit code. The expectations come from the
tables of the test_battery_* modules and from the constants of the cases that are not
tables, so a new row that the pages do not explain fails here.
"""

from __future__ import annotations

import re

import pytest
import test_battery_builder
import test_battery_engine
import test_battery_envfiles
import test_battery_indexes
import test_battery_interrupts
import test_battery_options
import test_battery_source
from battery import Failure
from conftest import ROOT

EXIT_CODES = ROOT / "docs" / "reference" / "exit-codes.md"
TROUBLESHOOTING = ROOT / "docs" / "how-to" / "troubleshooting.md"

ROWS: list[Failure] = [
    *test_battery_source.SOURCE_CASES,
    *test_battery_envfiles.ENV_FILE_CASES,
    *test_battery_options.TAG_CASES,
    *test_battery_options.OPTION_CASES,
    *test_battery_options.ENGINE_OPTION_CASES,
    *test_battery_builder.BUILDER_CASES,
    *test_battery_builder.ASSEMBLE_CASES,
    *test_battery_engine.ENGINE_CASES,
]
# (code, message, hint) of the cases that are not table rows.
OTHERS = [
    (130, test_battery_interrupts.INTERRUPTED, None),
    (124, test_battery_interrupts.TIMED_OUT.split(" (")[0], test_battery_interrupts.TIMEOUT_HINT),
    (5, test_battery_engine.LOSING, test_battery_engine.LOST_HINT),
    (7, test_battery_indexes.INDEX_MESSAGE, test_battery_indexes.INDEX_HINT),
    (5, "the Podman service stopped answering", "the next build removes the container it left"),
    (5, "Podman is not installed", "install it (Debian/Ubuntu: `apt-get install podman`"),
    (5, "`podman system service` exited with status", "run `buildpy doctor` to see what Podman"),
]
EXPECTED = [(row.code, row.message, row.hint) for row in ROWS if not row.xfail] + OTHERS


def sections() -> dict[int, str]:
    """The troubleshooting page's text under each ``## Exit N`` heading."""
    text = TROUBLESHOOTING.read_text()
    parts = re.split(r"^## Exit (\d+)\b.*$", text, flags=re.MULTILINE)
    return {int(code): body for code, body in zip(parts[1::2], parts[2::2])}


def documented_codes() -> set[int]:
    return {int(code) for code in re.findall(r"^\| (\d+) \|", EXIT_CODES.read_text(), re.M)}


def test_every_code_the_battery_sees_is_documented_and_every_documented_one_is_seen() -> None:
    seen = {code for code, _, _ in EXPECTED}
    assert seen <= documented_codes()
    # 1: an internal error is a bug, no case makes one; 9, 10 (pull, publish) and 11 (cache
    # import) have their own tests against a registry and a second storage
    assert documented_codes() - seen == {1, 9, 10, 11}
    assert set(sections()) == seen


@pytest.mark.parametrize(
    ("code", "hint"),
    sorted({(code, hint) for code, _, hint in EXPECTED if hint}),
    ids=lambda value: str(value)[:40],
)
def test_the_troubleshooting_page_shows_each_hint_under_its_code(code: int, hint: str) -> None:
    assert hint in sections()[code]


@pytest.mark.parametrize("code", sorted({code for code, _, _ in EXPECTED}))
def test_each_exit_code_section_names_its_error_kind(code: int) -> None:
    kind = re.search(rf"^\| {code} \| `(\w+)`", EXIT_CODES.read_text(), re.M)
    assert kind is not None
    heading = re.search(rf"^## Exit {code}: .*$", TROUBLESHOOTING.read_text(), re.M)
    assert heading is not None and f"`{kind.group(1)}`" in heading.group(0)
