"""Shared by all tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """``cli.main`` points structlog at the test's captured stderr, which closes when the
    test ends; later tests that log must not write there."""
    yield
    structlog.reset_defaults()
