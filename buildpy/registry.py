"""Registries: when the builder is pulled (``--pull``), and what to do when one fails.

buildpy contacts a registry only when asked to: a builder in local storage is
used as it is (``--pull missing``, the default, and ``never``); a missing one is
pulled (``missing``), and ``always`` pulls even when it is there. Names under
``localhost/`` (no port) and image IDs are local by Podman's convention and are
never pulled, so the default builder keeps its build-it-locally advice.

TLS follows Podman: ``tls_verify`` None leaves it to registries.conf
(``insecure = true`` for a registry), False is Podman's ``--tls-verify=false``.
The messages a registry gives through Podman are matched here to a hint.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from typing import Literal

from buildpy import log
from buildpy.engine import Engine, ImageInfo
from buildpy.errors import BuilderImageError, PullFailed
from buildpy.image import is_image_name, split_tag

_log = log.get(__name__)

PullPolicy = Literal["missing", "always", "never"]
PULL_POLICIES: tuple[PullPolicy, ...] = ("missing", "always", "never")
# s2i's spellings (--pull-policy) for the same policies
S2I_PULL_POLICIES: dict[str, PullPolicy] = {
    "if-not-present": "missing",
    "always": "always",
    "never": "never",
}

_IMAGE_ID = re.compile(r"(sha256:)?[0-9a-f]{12,64}")


def registry_host(ref: str) -> str | None:
    """The registry part of an image name (``host[:port]``), None for short names."""
    first, sep, _ = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def is_local_only(ref: str) -> bool:
    """Whether ``ref`` names something only local storage can have: an image ID, or
    a name under ``localhost/`` (no port), where Podman's own builds and imports go."""
    return _IMAGE_ID.fullmatch(ref) is not None or registry_host(ref) == "localhost"


def obtain(engine: Engine, ref: str, policy: PullPolicy, tls_verify: bool | None) -> ImageInfo:
    """The builder image, pulled when the policy says so; ``BuilderImageError`` when it
    is missing and may not be pulled (or could not be: ``Not An Image`` is no name a
    registry holds), ``PullFailed`` when the registry does not give it."""
    local_only = is_local_only(ref) or not is_image_name(ref)
    if policy != "always" or local_only:
        found = engine.find_image(ref)
        if found is not None:
            if policy == "always":
                _log.info("not pulled: a localhost/ name or an image ID is local", image=ref)
            return found
    if local_only:
        raise _missing(ref)
    if policy == "never":
        raise _not_pulled(ref)
    _log.info("pulling the builder", image=ref, registry=registry_host(ref) or "search")
    started = time.monotonic()
    image_id = engine.pull(ref, tls_verify, _progress)
    found = engine.find_image(image_id)
    if found is None:  # removed by someone else in between
        raise PullFailed(f"{ref} was pulled but is gone from local storage", "build again")
    _log.info("pulled", image=ref, id=found.id[:12], seconds=round(time.monotonic() - started, 3))
    return replace(found, ref=ref)


def require_builder(engine: Engine, ref: str, chooser: str = "--builder") -> ImageInfo:
    """The image from local storage (never pulled), or ``BuilderImageError`` saying how to
    get it (``chooser`` names the option or argument that picks another one)."""
    found = engine.find_image(ref)
    if found is None:
        raise _missing(ref, chooser)
    return found


def _missing(ref: str, chooser: str = "--builder") -> BuilderImageError:
    return BuilderImageError(
        f"builder image {ref} is not in local storage",
        "build it with `buildpy builder build` (or `make builders`), load it with"
        f" `podman load`, or name another one with {chooser}",
    )


def _not_pulled(ref: str) -> BuilderImageError:
    return BuilderImageError(
        f"builder image {ref} is not in local storage, and --pull never forbids pulling it",
        "pull it with --pull missing (the default), `podman pull` or `podman load` it,"
        " or name another one with --builder",
    )


def _progress(line: str) -> None:
    _log.debug(line)


_UNREACHABLE = (
    "{host} cannot be reached: check that it runs, and its name and port; without a"
    " registry, move images with `podman save -m` and `podman load`"
)
_LOCALHOST = (
    "localhost/ (without a port) is a local name, not a registry: tag the image with the"
    " registry's host and port, e.g. 127.0.0.1:5000/NAME"
)
# (what the registry's message contains, the hint); {host} is the registry, {ref} the image.
_HINTS = (
    (
        ("server gave HTTP response to HTTPS client",),
        "the registry at {host} speaks plain HTTP: pass --no-tls-verify (Podman's"
        " --tls-verify=false), or mark it insecure in registries.conf"
        ' ([[registry]] location = "{host}" insecure = true)',
    ),
    (
        ("x509:", "certificate"),
        "the certificate of {host} is not trusted: put its CA in"
        " /etc/containers/certs.d/{host}/ca.crt (rootless:"
        " ~/.config/containers/certs.d/{host}/ca.crt), or pass --no-tls-verify for a test registry",
    ),
    (
        ("unauthorized", "authentication required", "denied", "403 Forbidden"),
        "log in to {host} as the user the Podman service runs as (`podman login {host}`);"
        " the service reads that user's auth.json",
    ),
    (
        ("manifest unknown", "name unknown", "not found", "404 Not Found"),
        "{host} has no image called {ref}: check the name and tag"
        " (`skopeo list-tags docker://{repository}`)",
    ),
    (
        ("short-name", "short name"),
        "give the full name, with the registry: HOST[:PORT]/NAME[:TAG]",
    ),
    (
        ("UNSUPPORTED", "read-only", "read only", "method not allowed"),
        "{host} refuses to store images (is it read-only?): push somewhere else or ask"
        " its administrator",
    ),
    (
        (
            "connection refused",
            "no such host",
            "i/o timeout",
            "network is unreachable",
            "no route to host",
            "connection reset",
            "TLS handshake timeout",
        ),
        _UNREACHABLE,
    ),
)


def registry_hint(message: str, ref: str) -> str | None:
    """What to do about a registry's answer ``message`` for the image ``ref``."""
    host = registry_host(ref) or "the registry"
    lowered = message.lower()
    for needles, hint in _HINTS:
        if any(needle.lower() in lowered for needle in needles):
            if hint is _UNREACHABLE and host == "localhost":
                hint = _LOCALHOST
            repository = split_tag(ref.partition("@")[0])[0]
            return hint.format(host=host, ref=ref, repository=repository)
    return None
