"""The dependency cache's size limit: the eviction choice (pure), sizes, last uses."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fakes import FakeEngine
from hypothesis import given
from hypothesis import strategies as st

from buildpy import cache, cachesize
from buildpy.cachesize import Entry, choose, total
from buildpy.engine import ImageInfo
from buildpy.errors import UsageError


@st.composite
def caches(draw: st.DrawFn) -> tuple[list[Entry], int, frozenset[str]]:
    """Entries (some grown from earlier ones), a limit, and protected IDs."""
    count = draw(st.integers(0, 12))
    entries: list[Entry] = []
    for n in range(count):
        parent = draw(st.sampled_from([None, *[e.id for e in entries]]))
        entries.append(
            Entry(
                id=f"i{n}",
                size=draw(st.integers(0, 1000)),
                last_used=draw(st.integers(0, 20)),
                parent=parent,
            )
        )
    limit = draw(st.integers(0, 6000))
    ids = [e.id for e in entries]
    protected = frozenset(draw(st.lists(st.sampled_from(ids), max_size=2))) if ids else frozenset()
    return entries, limit, protected


def _ancestors(entries: list[Entry], ids: frozenset[str]) -> set[str]:
    by_id = {e.id: e for e in entries}
    found: set[str] = set()
    for start in ids:
        parent = by_id[start].parent
        while parent is not None and parent not in found:
            found.add(parent)
            parent = by_id[parent].parent
    return found


@given(caches())
def test_never_over_the_limit_unless_only_what_must_stay_is_left(
    case: tuple[list[Entry], int, frozenset[str]],
) -> None:
    entries, limit, protected = case
    evicted = choose(entries, limit, protected)
    kept = [e for e in entries if e not in evicted]
    must_stay = set(protected) | _ancestors(entries, protected)
    assert total(kept) <= limit or {e.id for e in kept} <= must_stay
    assert not {e.id for e in evicted} & set(protected)


@given(caches())
def test_evicts_no_more_than_needed(case: tuple[list[Entry], int, frozenset[str]]) -> None:
    entries, limit, protected = case
    evicted = choose(entries, limit, protected)
    if evicted:
        kept = [e for e in entries if e not in evicted]
        assert total(kept) + evicted[-1].size > limit  # the last one was needed


@given(caches())
def test_each_eviction_is_the_least_recently_used_of_what_may_go(
    case: tuple[list[Entry], int, frozenset[str]],
) -> None:
    """At each step: not protected, no remaining layer grew from it, and none of those that
    could have gone instead was used less recently."""
    entries, limit, protected = case
    remaining = list(entries)
    for victim in choose(entries, limit, protected):
        parents = {e.parent for e in remaining if e.parent}
        could = [e for e in remaining if e.id not in protected and e.id not in parents]
        assert victim in could
        assert victim.last_used == min(e.last_used for e in could)
        remaining.remove(victim)


@given(
    st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 100)), max_size=12),
    st.integers(0, 6000),
)
def test_without_growth_the_oldest_go_first(sizes: list[tuple[int, int]], limit: int) -> None:
    entries = [Entry(f"i{n}", size, used) for n, (size, used) in enumerate(sizes)]
    evicted = choose(entries, limit, frozenset())
    kept = [e for e in entries if e not in evicted]
    assert all(k.last_used >= e.last_used for k in kept for e in evicted)


def test_a_layer_another_grew_from_goes_after_it() -> None:
    base = Entry("base", 100, last_used=1)
    grown = Entry("grown", 10, last_used=5, parent="base")
    other = Entry("other", 50, last_used=3)
    assert choose([base, grown, other], 110, frozenset()) == [other]
    assert choose([base, grown, other], 0, frozenset()) == [other, grown, base]
    assert choose([base, grown, other], 0, frozenset({"grown"})) == [other]


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("500M", 500_000_000),
        ("10G", 10_000_000_000),
        ("10GB", 10_000_000_000),
        ("1.5GiB", int(1.5 * 1024**3)),
        ("2k", 2000),
        ("123", 123),
        ("off", None),
        ("none", None),
    ],
)
def test_sizes_parse(text: str, size: int | None) -> None:
    assert cachesize.parse_size(text, "--cache-max") == size


@pytest.mark.parametrize("text", ["", "ten", "10X", "-1G", "1e9"])
def test_a_bad_size_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="--cache-max"):
        cachesize.parse_size(text, "--cache-max")


def test_the_option_beats_the_variable_which_beats_the_default() -> None:
    env = {cachesize.MAX_VARIABLE: "3G"}
    assert cachesize.configured_max("1G", env) == 1_000_000_000
    assert cachesize.configured_max(None, env) == 3_000_000_000
    assert cachesize.configured_max(None, {}) == cachesize.DEFAULT_MAX


def test_last_uses_are_recorded_and_forgotten() -> None:
    cachesize.record_use("sha256:a", when=10.0, adds=7)
    cachesize.record_use("sha256:b", when=20.0)
    cachesize.record_use("sha256:a", when=30.0)
    assert cachesize.last_uses() == {"sha256:a": 30.0, "sha256:b": 20.0}
    assert cachesize.recorded_sizes() == {"sha256:a": 7}  # kept across later uses
    cachesize.forget(["sha256:a"])
    assert cachesize.last_uses() == {"sha256:b": 20.0}


def test_concurrent_records_lose_nothing() -> None:
    threads = [
        threading.Thread(target=cachesize.record_use, args=(f"sha256:{n}", float(n)))
        for n in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cachesize.last_uses()) == 20


def test_a_damaged_state_file_counts_as_empty() -> None:
    Path(cachesize.LAST_USED).parent.mkdir(parents=True, exist_ok=True)
    Path(cachesize.LAST_USED).write_text("{not json")
    assert cachesize.last_uses() == {}
    cachesize.record_use("sha256:a", when=1.0)
    assert cachesize.last_uses() == {"sha256:a": 1.0}


def test_a_layer_in_use_is_not_taken() -> None:
    with cachesize.in_use("k" * 64), cachesize.unused("k" * 64) as free:
        assert not free
    with cachesize.unused("k" * 64) as free:
        assert free


# --------------------------------------------------------------------------- with the fake


def _cached(engine: FakeEngine, name: str, size: int, parent: str = "localhost/builder") -> str:
    image_id = f"sha256:{name}"
    ref = f"{cache.DEPENDENCY_REPOSITORY}:{name}"
    labels = {cache.KEY_LABEL: name * 8, cache.BUILDER_LABEL: "localhost/builder"}
    engine.stored[ref] = ImageInfo(image_id, ref, labels=labels, size=size)
    engine.parents[image_id] = parent
    return image_id


def test_layers_measure_what_each_adds_beyond_its_parent() -> None:
    engine = FakeEngine()
    engine.stored["localhost/builder"] = ImageInfo("sha256:builder", "b", size=1000)
    first = _cached(engine, "first", 1300)
    grown = _cached(engine, "grown", 1350, parent=first)
    loaded = _cached(engine, "loaded", 1200, parent="")  # cache import: no parent known
    adds = {layer.image.id: layer.adds for layer in cache.layers(engine)}
    assert adds == {first: 300, grown: 50, loaded: 200}


def test_evict_removes_the_least_recently_used_and_keeps_the_current_one() -> None:
    engine = FakeEngine()
    engine.stored["localhost/builder"] = ImageInfo("sha256:builder", "b", size=1000)
    old, middle, new = (_cached(engine, n, 1300) for n in ("old", "middle", "new"))
    for when, image_id in enumerate((old, middle, new)):
        cachesize.record_use(image_id, when=float(when), adds=300)
    removed = cache.evict(engine, limit=600, keep=old)
    assert [layer.image.id for layer in removed] == [middle]
    assert set(cachesize.last_uses()) == {old, new}


def test_evict_lists_nothing_while_the_recorded_sizes_fit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = FakeEngine()

    def no_listing(repository: str) -> list[object]:
        raise AssertionError("listed")

    monkeypatch.setattr(engine, "images", no_listing)
    cachesize.record_use("sha256:a", adds=300)
    cachesize.record_use("sha256:b", adds=300)
    assert cache.evict(engine, limit=600, keep="sha256:b") == []


def test_a_full_listing_records_every_size_and_forgets_what_is_gone() -> None:
    engine = FakeEngine()
    engine.stored["localhost/builder"] = ImageInfo("sha256:builder", "b", size=1000)
    loaded = _cached(engine, "loaded", 1200)  # not made here: no size recorded
    cachesize.record_use("sha256:pruned", adds=5000)  # removed by hand since
    current = _cached(engine, "current", 1100)
    cachesize.record_use(current, adds=100)
    assert cache.evict(engine, limit=1000, keep=current) == []
    assert cachesize.recorded_sizes() == {loaded: 200, current: 100}


def test_evict_skips_a_layer_another_build_uses() -> None:
    engine = FakeEngine()
    engine.stored["localhost/builder"] = ImageInfo("sha256:builder", "b", size=1000)
    old, new = (_cached(engine, n, 1300) for n in ("old", "new"))
    cachesize.record_use(old, when=1.0, adds=300)
    cachesize.record_use(new, when=2.0, adds=300)
    third = _cached(engine, "third", 1300)
    with cachesize.in_use("old" * 8):
        removed = cache.evict(engine, limit=300, keep=third)
    assert [layer.image.id for layer in removed] == [new]


# --------------------------------------------------------------------------- per index

_hosts = st.sampled_from(["mirror.example", "pypi.org", "127.0.0.1:8080", "private.example"])
_tokens = st.text("abcdefXYZ0123456789", min_size=1, max_size=8)


@given(st.lists(_hosts, min_size=1, max_size=3, unique=True), _tokens, _tokens)
def test_the_download_cache_follows_the_indexes_not_tokens_or_variables(
    hosts: list[str], one: str, two: str
) -> None:
    """Same indexes: same digest, whichever variables name them and whatever token they
    carry; one index more or less: another digest."""
    urls = [f"https://ci:{one}@{host}/simple" for host in hosts]
    by_pip = {"PIP_INDEX_URL": urls[0], "PIP_EXTRA_INDEX_URL": " ".join(urls[1:])}
    by_option = {
        "BUILDPY_INDEX_URL": urls[0].replace(f":{one}@", f":{two}@"),
        "PIPENV_PYPI_MIRROR": urls[0],
        "MICROPIPENV_DEFAULT_INDEX_URLS": ",".join(urls),
        "PIP_INDEX_URL": urls[0],
        "PIP_EXTRA_INDEX_URL": " ".join(url.replace(f":{one}@", f":{two}@") for url in urls[1:]),
    }
    assert cache.index_digest(by_pip) == cache.index_digest(by_option)
    fewer = {"PIP_INDEX_URL": urls[0]}
    if len(urls) > 1:
        assert cache.index_digest(fewer) != cache.index_digest(by_pip)
    assert cache.index_digest({}) != cache.index_digest(fewer)
    assert cache.index_digest({**by_pip, "PIP_NO_INDEX": "1"}) != cache.index_digest(by_pip)
