"""Failure battery, secrets: build-only values never reach the image.

One build with a dependency phase gets every kind of secret: a ``--build-env`` value,
index credentials in ``PIP_INDEX_URL``, a CA bundle (its content and its host path), and
credentials in a requirement line. The image is saved with ``podman save`` and every
byte of it (layers, config, history, labels, of both the application and the dependency
layer it sits on) is searched. A requirement line's credentials are in the image's own
copy of requirements.txt, by the user's choice, but never in a label: labels keep
digests of the lines.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from battery import APP_PY, BUILDER, Case, Outcome
from conftest import HOST_CA
from itest import file_contains

pytestmark = pytest.mark.rootless

SECRETS = {
    "build-env-value": "bpsecret-build-env-3f9a1c",
    "index-credential": "bpsecret-index-token-77ab2e",
    "ca-bundle-content": "bpsecret-ca-content-c0ffee",
    "ca-bundle-host-path": "bpsecret-ca-path-5eed42",
}
LINE_SECRET = "bpsecret-requirement-line-9d1e0f"


@dataclass
class Saved:
    outcome: Outcome
    tag: str
    archive: Path
    labels: dict[str, str]
    dependency_labels: dict[str, str]
    index_auth: list[str]


@pytest.fixture(scope="module")
def saved(podman_url: str) -> Iterator[Saved]:
    case = Case(podman_url)
    try:
        index = case.index()
        creds = f"bpuser:{SECRETS['index-credential']}"
        url = index.url.replace("http://", f"http://{creds}@")
        ca_dir = case.dir / SECRETS["ca-bundle-host-path"]
        ca_dir.mkdir()
        ca = ca_dir / "ca.crt"
        ca.write_text(HOST_CA.read_text() + f"\n# {SECRETS['ca-bundle-content']}\n")
        requirements = (
            f"six\n--extra-index-url http://bpuser:{LINE_SECRET}@127.0.0.1:1/simple\n"
            f"# {case.marker}\n"
        )
        app = case.app({"app.py": APP_PY, "requirements.txt": requirements})
        tag = case.tag()
        outcome = case.run(
            str(app),
            *("--builder", BUILDER, "--tag", tag, "--ca-bundle", str(ca)),
            *("--build-env", f"API_TOKEN={SECRETS['build-env-value']}"),
            *index.pip_args(url),
        )
        archive = case.dir / "image.tar"
        subprocess.run(
            ["podman", "save", "--format", "docker-archive", "-o", str(archive), tag],
            check=True,
            capture_output=True,
        )
        image = case.api.image(tag) or {}
        deps = case.api.image(case.cache_images[0]) if case.cache_images else None
        yield Saved(
            outcome,
            tag,
            archive,
            dict(image.get("Config", {}).get("Labels") or {}),
            dict((deps or {}).get("Config", {}).get("Labels") or {}),
            [auth for _, auth in index.requests if auth],
        )
    finally:
        case.close()


@pytest.mark.parametrize("secret", list(SECRETS.values()), ids=list(SECRETS))
def test_no_build_only_value_in_any_byte_of_the_image(saved: Saved, secret: str) -> None:
    saved.outcome.expect_success(saved.tag)
    assert saved.archive.stat().st_size > 10_000_000  # a whole image, layers included
    assert not file_contains(saved.archive, secret.encode())


def test_the_index_credentials_did_reach_pip(saved: Saved) -> None:
    """Else the search above would prove nothing."""
    saved.outcome.expect_success(saved.tag)
    assert saved.index_auth, "pip never sent the credentials"
    assert saved.outcome.logged("installing dependencies")


@pytest.mark.parametrize("image", ["application", "dependency-layer"])
def test_requirement_line_credentials_are_in_no_label(saved: Saved, image: str) -> None:
    saved.outcome.expect_success(saved.tag)
    labels = saved.labels if image == "application" else saved.dependency_labels
    assert "io.buildpy.dependencies.requirements" in saved.dependency_labels
    assert labels, "no labels to search"
    assert not any(LINE_SECRET in f"{key}={value}" for key, value in labels.items())


def test_the_application_image_keeps_no_dependency_bookkeeping(saved: Saved) -> None:
    """The layer's labels are read from dependency images only; the application image
    inherits them, emptied by its commit (Podman cannot remove an inherited label)."""
    saved.outcome.expect_success(saved.tag)
    assert saved.dependency_labels.get("io.buildpy.dependencies.key")
    bookkeeping = ("io.buildpy.dependencies.", "io.buildpy.application-phase")
    kept = {k: v for k, v in saved.labels.items() if k.startswith(bookkeeping) and v}
    assert kept == {}
    assert saved.labels.get("io.openshift.s2i.build.image") == BUILDER


def test_the_secrets_are_in_the_build_log_only_as_asked(saved: Saved) -> None:
    """buildpy itself never prints a build-only value (assemble may; this one does not)."""
    saved.outcome.expect_success(saved.tag)
    for secret in (SECRETS["build-env-value"], SECRETS["index-credential"]):
        assert secret not in saved.outcome.stderr
