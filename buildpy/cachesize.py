"""The dependency cache's size limit: sizes, last uses, and which layers to evict.

Every build that adds a dependency layer ends by bringing the cache back under its limit
(``--cache-max``, else ``BUILDPY_CACHE_MAX``, else ``DEFAULT_MAX``), removing the
least recently used layers first (``choose``, pure). What counts is what each layer
adds beyond the image it was made from (its builder, or the layer it grew from):
10 dependency layers on a 1 GB builder are the builder once plus ten small layers.

Last use is kept in a small state file, ``LAST_USED`` (image ID: Unix time of the last
use, and what the layer adds when known), updated under an ``flock`` by every build that
uses, grows or makes a layer. An image label
cannot be changed without a new commit, and Podman records no last use or tag time; an
image the file does not know (made by another user of the same storage, or before the
file existed) counts as last used when it was made.

A layer is never evicted while a build uses it: a build holds a shared lock on the
layer's key (``in_use``) from before it looks the layer up until it ends, and eviction
takes each candidate's lock exclusively, without waiting, skipping the ones it cannot
have. A layer another cached layer grew from is evicted only after that one.

Listing the cached images is what costs (Podman 4.3 computes every image's size: 5 to
23 s for 480 dependency images on a busy shared machine), so a build that adds a layer
first sums the sizes the state file knows (each layer's is recorded when it is made,
and every full listing records them all): only when that passes the limit does it list.
A layer the file does not know (loaded by ``cache import``, made by another user of the
same storage) is counted from the next full listing on.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from buildpy import log
from buildpy.errors import UsageError

_log = log.get(__name__)

MAX_VARIABLE = "BUILDPY_CACHE_MAX"
DEFAULT_MAX = 10 * 1000**3  # 10 GB of what the layers add beyond their builders
STATE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "buildpy"
LAST_USED = STATE_DIR / "dependency-uses.json"
LOCK_DIR = STATE_DIR / "locks"
_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)
UNLIMITED = ("off", "none", "unlimited")


def parse_size(text: str, origin: str) -> int | None:
    """Bytes from ``10G``, ``500MB``, ``1.5GiB``, ``0``; None for ``off`` (no limit)."""
    if text.strip().lower() in UNLIMITED:
        return None
    found = _SIZE.match(text)
    if not found:
        raise UsageError(
            f"{origin} {text!r}: not a size",
            "give a number of bytes with an optional unit: 500M, 10G, 1.5GiB; or off",
        )
    number, unit, binary = found.groups()
    scale = 1024 ** "kmgt".index(unit.lower()) * 1024 if binary and unit else _UNITS[unit.lower()]
    return int(float(number) * scale)


def configured_max(given: str | None, env: Mapping[str, str]) -> int | None:
    """The limit: the option's, else the environment's, else ``DEFAULT_MAX``."""
    if given is not None:
        return parse_size(given, "--cache-max")
    if env.get(MAX_VARIABLE):
        return parse_size(env[MAX_VARIABLE], MAX_VARIABLE)
    return DEFAULT_MAX


@dataclass(frozen=True)
class Entry:
    """One cached dependency layer, as eviction sees it."""

    id: str
    size: int  # what it adds beyond the image it was made from
    last_used: float  # Unix time
    parent: str | None = None  # the cached layer it grew from, if any
    key: str = ""  # the dependency key (the name of its in-use lock)


def total(entries: Sequence[Entry]) -> int:
    return sum(entry.size for entry in entries)


def choose(entries: Sequence[Entry], limit: int, protected: frozenset[str]) -> list[Entry]:
    """The layers to evict, in order, to bring ``entries`` to ``limit`` bytes or below.

    Least recently used first; never one in ``protected`` (the layer this build uses,
    layers other builds use), never one another remaining layer grew from (it frees
    nothing while that one needs its files). Stops at the limit, or when nothing more
    may go.
    """
    kept = {entry.id: entry for entry in entries}
    size = total(entries)
    chosen: list[Entry] = []
    while size > limit:
        parents = {entry.parent for entry in kept.values() if entry.parent}
        candidates = [e for e in kept.values() if e.id not in protected and e.id not in parents]
        if not candidates:
            break
        oldest = min(candidates, key=lambda entry: (entry.last_used, entry.id))
        del kept[oldest.id]
        size -= oldest.size
        chosen.append(oldest)
    return chosen


# ----------------------------------------------------------------------------- last use


@contextmanager
def _locked(path: Path, mode: int) -> Iterator[IO[bytes] | None]:
    """``path`` opened and flock-ed with ``mode``; None when it cannot be (never an error:
    bookkeeping never fails a build)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+b")  # noqa: SIM115 - held over a yield
    except OSError as exc:
        _log.debug("no lock", path=str(path), error=str(exc))
        yield None
        return
    with handle:
        try:
            fcntl.flock(handle, mode)
        except BlockingIOError:
            yield None
            return
        yield handle


def _read(path: Path | None = None) -> dict[str, dict[str, float]]:
    """Image ID: {"used": Unix time, "adds": bytes (when measured)}; empty when the file
    is missing or bad."""
    path = path or LAST_USED
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    found: dict[str, dict[str, float]] = {}
    for image_id, item in data.items():
        if isinstance(item, dict):
            found[str(image_id)] = {
                k: float(v) for k, v in item.items() if k in ("used", "adds") and _number(v)
            }
    return found


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def last_uses() -> dict[str, float]:
    """Image ID: the Unix time a build last used it."""
    return {k: v["used"] for k, v in _read().items() if "used" in v}


def recorded_sizes() -> dict[str, int]:
    """Image ID: what it adds beyond the image it was made from, as last measured."""
    return {k: int(v["adds"]) for k, v in _read().items() if "adds" in v}


def record_use(image_id: str, when: float | None = None, adds: int | None = None) -> None:
    """Say that ``image_id`` was used now (or at ``when``); with ``adds``, its size too."""
    item: dict[str, float] = {"used": time.time() if when is None else when}
    if adds is not None:
        item["adds"] = adds
    _update({image_id: item}, ())


def record_sizes(sizes: Mapping[str, int]) -> None:
    """Remember what each image adds (measured by a full listing)."""
    _update({image_id: {"adds": adds} for image_id, adds in sizes.items()}, ())


def forget(image_ids: Sequence[str]) -> None:
    """Drop evicted or removed images from the file."""
    if image_ids:
        _update({}, image_ids)


def _update(items: Mapping[str, Mapping[str, float]], gone: Sequence[str]) -> None:
    path = LAST_USED
    with _locked(path.with_name(path.name + ".lock"), fcntl.LOCK_EX) as lock:
        if lock is None:
            return
        state = _read(path)
        for image_id, item in items.items():
            state.setdefault(image_id, {}).update(item)
        for image_id in gone:
            state.pop(image_id, None)
        try:
            with tempfile.NamedTemporaryFile(
                "w", dir=path.parent, prefix=".uses-", delete=False, encoding="utf-8"
            ) as out:
                json.dump(state, out, indent=0, sort_keys=True)
            os.replace(out.name, path)
        except OSError as exc:
            _log.debug("could not record the dependency layer's use", error=str(exc))


# ----------------------------------------------------------------------------- in use


def _use_lock(key: str) -> Path:
    return LOCK_DIR / f"use-{key[:32]}.lock"  # read at each call: tests move it


@contextmanager
def in_use(key: str) -> Iterator[None]:
    """Hold the layer ``key`` as in use (shared: any number of builds at once)."""
    with _locked(_use_lock(key), fcntl.LOCK_SH):
        yield


@contextmanager
def unused(key: str) -> Iterator[bool]:
    """Hold the layer ``key`` exclusively if no build uses it; False when one does."""
    if not key:
        yield True
        return
    with _locked(_use_lock(key), fcntl.LOCK_EX | fcntl.LOCK_NB) as lock:
        yield lock is not None
