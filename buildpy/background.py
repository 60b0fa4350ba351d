"""A call that runs on a daemon thread while the build goes on, and its answer later.

For Podman round trips that need not hold the build up: the wait for a running
container (asked alongside its output), the image a commit's name names (asked while
the source uploads), the builder (asked while the rest of buildpy is imported).
podman-py's client serves such calls at once on separate pooled connections. The
thread is a daemon, so an interrupted build never waits for it: after Ctrl-C nothing
joins it, and the process's end stops it.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Running(Generic[T]):
    """``call()`` started on a daemon thread; ``result()`` waits for its value or error."""

    def __init__(self, call: Callable[[], T], name: str = "buildpy-background") -> None:
        self._call = call
        self._values: list[T] = []
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._values.append(self._call())
        except BaseException as exc:  # handed to the caller of result()
            self._errors.append(exc)

    def result(self) -> T:
        self._thread.join()
        if self._errors:
            raise self._errors[0]
        return self._values[0]
