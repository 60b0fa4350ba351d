"""Unit-test isolation: each test starts with structlog's defaults.

``cli.main`` configures structlog to write to the stream pytest captured for that test;
once pytest closes it, a later test that logs would write to a closed file.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def fresh_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()
