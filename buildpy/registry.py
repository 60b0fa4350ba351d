"""Registries: what to do when one refuses a pull or a push.

TLS follows Podman: ``tls_verify`` None leaves it to registries.conf
(``insecure = true`` for a registry), False is Podman's ``--tls-verify=false``.
The messages a registry gives through Podman are matched here to a hint.
"""

from __future__ import annotations

from buildpy.image import split_tag


def registry_host(ref: str) -> str | None:
    """The registry part of an image name (``host[:port]``), None for short names."""
    first, sep, _ = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


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
