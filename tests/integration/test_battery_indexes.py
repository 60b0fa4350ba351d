"""Failure battery, package indexes: the download cache never answers for another index,
and an index that cannot be reached is a clear failure, not a build from cached wheels.

Real Podman, real pip, indexes on 127.0.0.1 (``--network host``). The builder is
buildpy's own (its assemble makes both checks), under ``BUILDPY_BUILDER_PREFIX``.
"""

from __future__ import annotations

import pytest
from battery import APP_PY, Case
from conftest import BUILDER_PREFIX

pytestmark = pytest.mark.rootless

BUILDER = f"{BUILDER_PREFIX}/python-311"
UNREACHABLE = "127.0.0.1:9"  # the discard port: nothing listens there
INDEX_MESSAGE = "cannot be reached from the build"
INDEX_HINT = "an index on this machine's 127.0.0.1 needs --network host"


def _requirements(case: Case, name: str) -> dict[str, str]:
    """An app needing six, with requirements of its own (another dependency layer, built
    from the builder, not reused or grown)."""
    return {"app.py": APP_PY, "requirements.txt": f"six\n# {name} {case.marker}\n"}


def test_an_unreachable_index_fails_naming_it_after_another_index_filled_the_cache(
    case: Case,
) -> None:
    """The bug: with six cached from another index, a build naming a mirror that does not
    answer built from the cached wheel with exit 0. Now: exit 7, the index named with its
    credentials masked, a hint, no image, nothing left behind."""
    index = case.index()
    warm = case.app(_requirements(case, "warm"), name="warm")
    case.run(str(warm), "--builder", BUILDER, *index.pip_args()).expect_success()
    for how in (
        ["--index-url", f"http://ci:s3cret-token@{UNREACHABLE}/simple"],
        ["--build-env", f"PIP_INDEX_URL=http://ci:s3cret-token@{UNREACHABLE}/simple"],
    ):
        cold = case.app(_requirements(case, f"cold {how[0]}"), name="cold")
        failed = case.run(str(cold), "--builder", BUILDER, "--network", "host", *how)
        failed.expect(
            7,
            f"the package index http://ci:***@{UNREACHABLE}/simple {INDEX_MESSAGE}",
            INDEX_HINT,
        )
        assert "s3cret-token" not in failed.stderr
        assert "/wheels/six-" not in failed.stderr  # nothing came from the cache
        print(f"{how[0]}: failed after {failed.seconds:.1f} s")


def test_two_indexes_do_not_share_cached_wheels(case: Case) -> None:
    """A wheel fetched from index A is not offered to a build from index B: B serves it."""
    first, second = case.index(), case.index()
    warm = case.app(_requirements(case, "first"), name="first")
    case.run(str(warm), "--builder", BUILDER, *first.pip_args()).expect_success()
    assert any("/six-" in path for path, _ in first.requests)
    other = case.app(_requirements(case, "second"), name="second")
    case.run(str(other), "--builder", BUILDER, *second.pip_args()).expect_success()
    assert any("/six-" in path for path, _ in second.requests), second.requests
