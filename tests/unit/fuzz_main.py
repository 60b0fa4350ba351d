"""Run one fuzz target under atheris: ``python fuzz_main.py TARGET [libFuzzer options]``.

Only buildpy and pathspec are instrumented for coverage, as they are imported here
(instrumenting everything loaded takes far longer than the fuzzing itself).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["buildpy", "pathspec"]):
    import fuzz_targets


def main() -> None:
    target = fuzz_targets.TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
