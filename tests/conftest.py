"""Settings for every test.

Hypothesis's per-example deadline (200 ms) measures the machine's load more than the code:
under a busy CI host a first example that compiles a regex strategy can miss it. The
number of examples still bounds each property test's time.
"""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("buildpy", deadline=None)
settings.load_profile("buildpy")
