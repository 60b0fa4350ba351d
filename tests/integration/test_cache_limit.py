"""The dependency cache's size limit, in a storage of its own (nothing else is evicted):
a build that adds a layer past the limit removes the least recently used one, never its
own; `cache ls` shows what each layer adds beyond its builder and its last use."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from conftest import BUILDPY, BuildFn
from storage import Storage, empty_storage
from test_rebuild import BUILDER

APP_PY = 'print("limit")\n'


@pytest.fixture
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storage]:
    with empty_storage(tmp_path_factory.mktemp("limit"), BUILDER) as made:
        yield made


def _app(root: Path, name: str) -> Path:
    app = root / name
    app.mkdir()
    (app / "app.py").write_text(APP_PY)
    (app / "requirements.txt").write_text(f"six\n# {name}: a dependency layer of its own\n")
    return app


def _cache_ls(env: dict[str, str]) -> list[list[str]]:
    listed = subprocess.run(
        [*BUILDPY, "cache", "ls"], capture_output=True, text=True, env=env, check=True
    ).stdout
    return [line.split("\t") for line in listed.splitlines() if "\timage\t" in line]


def test_a_build_past_the_limit_evicts_the_least_recently_used_layer(
    buildpy_build: BuildFn, storage: Storage, tmp_path: Path
) -> None:
    env = {
        "CONTAINER_HOST": storage.url,
        "XDG_CACHE_HOME": str(tmp_path / "state"),  # the last-use file and locks, private
        "BUILDPY_CACHE_MAX": "1",  # one byte: only the current layer stays
    }
    first = buildpy_build(_app(tmp_path, "first"), builder=BUILDER, env=env)
    (only,) = _cache_ls({**os.environ, **env})
    first_layer = only[2]
    assert "dependency cache over its limit" not in first.stderr  # its own layer stays

    second = buildpy_build(_app(tmp_path, "second"), builder=BUILDER, env=env)
    assert "dependency cache over its limit" in second.stderr
    rows = _cache_ls({**os.environ, **env})
    assert len(rows) == 1 and rows[0][2] != first_layer, rows
    names = storage.names()
    (first_key,) = [n for n in first_layer.split(",") if ":grow-" not in n and ":from-" not in n]
    assert first_key not in names, names  # (its growth name moved on to the second layer)

    verb, kind, _, size, created, adds, used = rows[0]
    assert (verb, kind) == ("cached", "image")
    total_mb, adds_mb = float(size.split()[0]), float(adds.split()[0])
    assert 0 <= adds_mb < total_mb / 4, rows  # the builder is not counted in it
    assert datetime.fromisoformat(used) >= datetime.fromisoformat(created)


def test_without_a_limit_nothing_is_evicted(
    buildpy_build: BuildFn, storage: Storage, tmp_path: Path
) -> None:
    env = {
        "CONTAINER_HOST": storage.url,
        "XDG_CACHE_HOME": str(tmp_path / "state"),
        "BUILDPY_CACHE_MAX": "off",
    }
    for name in ("one", "two"):
        buildpy_build(_app(tmp_path, name), builder=BUILDER, env=env)
    assert len(_cache_ls({**os.environ, **env})) == 2
