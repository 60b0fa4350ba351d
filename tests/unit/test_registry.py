"""--pull: when the builder is pulled, and the hints a registry's refusal gets."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import BUILDER, FakeEngine
from hypothesis import given
from hypothesis import strategies as st

from buildpy import build, registry
from buildpy import plan as build_plan
from buildpy.config import BuildOptions
from buildpy.engine import ImageInfo
from buildpy.errors import BuilderImageError, PullFailed
from buildpy.registry import is_local_only, obtain, registry_hint, registry_host

REMOTE = "127.0.0.1:5000/team/python-311"
REMOTE_BUILDER = ImageInfo(id="sha256:remote", ref=REMOTE, labels=BUILDER.labels)


def engine_with_registry(local: bool = False) -> FakeEngine:
    engine = FakeEngine(registry_hosts={"127.0.0.1:5000"})
    engine.registry[f"{REMOTE}:latest"] = REMOTE_BUILDER
    if local:
        engine.stored[REMOTE] = REMOTE_BUILDER
    return engine


@pytest.mark.parametrize(
    ("ref", "host"),
    [
        ("127.0.0.1:5000/team/app:v1", "127.0.0.1:5000"),
        ("quay.io/sclorg/python-311-c9s", "quay.io"),
        ("localhost/buildpy/python-311", "localhost"),
        ("localhost:5000/app", "localhost:5000"),
        ("registry/app", None),  # a Docker Hub organisation, not a host
        ("python", None),
        ("python:3.11", None),
    ],
)
def test_registry_host(ref: str, host: str | None) -> None:
    assert registry_host(ref) == host


@given(
    host=st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z]{2,5}|:[0-9]{2,5})", fullmatch=True),
    path=st.from_regex(r"[a-z0-9]+(/[a-z0-9]+){0,2}(:[a-z0-9.]{1,8})?", fullmatch=True),
)
def test_a_host_with_a_dot_or_a_port_is_a_registry(host: str, path: str) -> None:
    assert registry_host(f"{host}/{path}") == host
    assert not is_local_only(f"{host}/{path}")


@pytest.mark.parametrize(
    "ref",
    ["localhost/buildpy/absent", "sha256:" + "a" * 64, "a264f74acc88", "b" * 64],
)
def test_local_names_and_image_ids_are_never_pulled(ref: str) -> None:
    assert is_local_only(ref)
    engine = engine_with_registry()
    for policy in registry.PULL_POLICIES:
        with pytest.raises(BuilderImageError, match="not in local storage") as info:
            obtain(engine, ref, policy, False)
        assert info.value.hint is not None and "buildpy builder build" in info.value.hint
    assert engine.pulled == []


def test_a_local_builder_is_used_without_asking_a_registry() -> None:
    engine = engine_with_registry(local=True)
    engine.registry_hosts.clear()  # any registry contact would fail
    for policy in ("missing", "never"):
        assert obtain(engine, REMOTE, policy, None).id == "sha256:remote"
    assert engine.pulled == []


def test_a_missing_builder_is_pulled_with_missing_and_always() -> None:
    for policy in ("missing", "always"):
        engine = engine_with_registry()
        found = obtain(engine, REMOTE, policy, False)
        assert (found.id, found.ref) == ("sha256:remote", REMOTE)
        assert engine.pulled == [REMOTE]


def test_always_pulls_even_a_local_builder() -> None:
    engine = engine_with_registry(local=True)
    obtain(engine, REMOTE, "always", False)
    assert engine.pulled == [REMOTE]


def test_never_with_a_missing_builder_is_exit_6_with_a_hint() -> None:
    engine = engine_with_registry()
    with pytest.raises(BuilderImageError, match="--pull never") as info:
        obtain(engine, REMOTE, "never", False)
    assert info.value.exit_code == 6
    assert info.value.hint is not None and "--pull missing" in info.value.hint
    assert engine.pulled == []


@pytest.mark.parametrize(
    ("tls_verify", "hosts", "ref", "needle"),
    [
        (None, {"127.0.0.1:5000"}, REMOTE, "--no-tls-verify"),
        (False, set(), REMOTE, "cannot be reached"),
        (False, {"127.0.0.1:5000"}, "127.0.0.1:5000/team/nope", "has no image called"),
    ],
)
def test_pull_failures_are_exit_9_with_hints(
    tls_verify: bool | None, hosts: set[str], ref: str, needle: str
) -> None:
    engine = engine_with_registry()
    engine.registry_hosts = hosts
    with pytest.raises(PullFailed) as info:
        obtain(engine, ref, "missing", tls_verify)
    assert info.value.exit_code == 9
    assert ref in info.value.message
    assert info.value.hint is not None and needle in info.value.hint


@pytest.mark.parametrize(
    ("message", "needle"),
    [
        ('Get "https://h:5000/v2/": http: server gave HTTP response to HTTPS client', "insecure"),
        ("x509: certificate signed by unknown authority", "certs.d/h:5000/ca.crt"),
        ("unauthorized: authentication required", "podman login h:5000"),
        ("reading manifest v1 in h:5000/app: manifest unknown", "docker://h:5000/app`"),
        ("dial tcp 127.0.0.1:5000: connect: connection refused", "cannot be reached"),
        ("initiating layer upload: StatusCode: 405, Method not allowed", "read-only"),
    ],
)
def test_registry_messages_get_a_hint(message: str, needle: str) -> None:
    hint = registry_hint(message, "h:5000/app:v1")
    assert hint is not None and needle in hint


def test_localhost_without_a_port_is_not_a_registry() -> None:
    hint = registry_hint("dial tcp 127.0.0.1:443: connect: connection refused", "localhost/app")
    assert hint is not None and "local name" in hint


def test_an_unknown_message_has_no_hint() -> None:
    assert registry_hint("something else entirely", "h:5000/app") is None


def test_a_build_pulls_its_missing_builder(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("print('hi')\n")
    options = BuildOptions(source=tmp_path, builder=REMOTE, tls_verify=False)
    engine = engine_with_registry()
    result = build.run(build_plan.make(options, describe=lambda root: None), engine, output=_Sink())
    assert engine.pulled == [REMOTE]
    assert engine.created[0].image == "sha256:remote"
    assert result.image_id == "sha256:result1"


class _Sink:
    def write(self, chunk: bytes) -> int:
        return len(chunk)

    def flush(self) -> None:
        pass
