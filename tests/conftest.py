"""Settings for every test.

Hypothesis's per-example deadline (200 ms) measures the machine's load more than the code:
under a busy CI host a first example that compiles a regex strategy can miss it. The
number of examples still bounds each property test's time.
"""

from __future__ import annotations

import pytest
from hypothesis import settings

from buildpy import cachesize, log, staticfiles

settings.register_profile("buildpy", deadline=None)
settings.load_profile("buildpy")


@pytest.fixture(autouse=True)
def default_log() -> None:
    """Every test starts from the log's default configuration (lines for people on
    stderr), whatever an earlier test configured: a test that reads structlog events
    asks for JSON itself, so it passes alone as well as in the suite."""
    log.configure()


@pytest.fixture(autouse=True)
def private_state(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Builds run in this process keep buildpy's state files (the last uses of dependency
    layers, their locks, kept static files) in a temporary directory, never in the
    user's ~/.cache."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setattr(cachesize, "LAST_USED", state / "dependency-uses.json")
    monkeypatch.setattr(cachesize, "LOCK_DIR", state / "locks")
    monkeypatch.setattr(staticfiles, "STORE", state / "static")
