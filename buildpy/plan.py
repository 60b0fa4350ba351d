"""The build plan: everything decided from the source and the options, before any engine work.

``make`` reads the source directory, its ``.s2i/environment``, ``--env-file`` and
``-e`` (see ``environment`` for the precedence), the build-only values
(``--build-env``, the CA bundle), the ignore rules, the source's own S2I scripts,
the output labels and the files that decide dependencies, and walks the source
tree once (an unreadable file, a socket or a huge file is reported here, not
halfway through the upload). Every user error that can be found without Podman
is found here, so a bad option never costs a container.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from buildpy import dependencies, environment, gitinfo, image, log, scripts, source
from buildpy.config import BuildOptions
from buildpy.engine import Mount
from buildpy.errors import UsageError

_log = log.get(__name__)

S2I_ENVIRONMENT = ".s2i/environment"
CA_TARGET = "/dev/shm/buildpy-ca-bundle.crt"  # a tmpfs: the mount point is never committed
CA_VARIABLES = (
    "PIP_CERT",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "NODE_EXTRA_CA_CERTS",
)


@dataclass(frozen=True)
class BuildPlan:
    """Everything decided before the engine is touched."""

    options: BuildOptions
    root: Path
    env_layers: tuple[environment.EnvLayer, ...]
    image_env: Mapping[str, str]
    build_env: Mapping[str, str]
    rules: source.IgnoreRules
    source_scripts: Mapping[str, Path]
    labels: Mapping[str, str]
    mounts: tuple[Mount, ...]
    dependencies: dependencies.DependencyFiles


def make(
    options: BuildOptions, describe: Callable[[Path], gitinfo.GitInfo | None] = gitinfo.describe
) -> BuildPlan:
    """Read the source and configuration into a plan; no engine involved."""
    root = source.source_root(options.source)
    if options.tag is not None:
        image.check_reference(options.tag, "--tag")
    if options.incremental and not options.tag:
        raise UsageError(
            "--incremental needs --tag: the previous image under that tag gives the artifacts",
            "add --tag NAME: the image to take the artifacts from, and the new image's name",
        )
    layers = _env_layers(root, options)
    build_env: dict[str, str] = {}
    mounts: tuple[Mount, ...] = ()
    if options.ca_bundle is not None:
        mounts = (Mount(str(_ca_bundle(options.ca_bundle)), CA_TARGET),)
        build_env.update({name: CA_TARGET for name in CA_VARIABLES})
    for arg in options.build_env:
        key, value = environment.parse_assignment(arg, "--build-env")
        build_env[key] = value
    rules = source.IgnoreRules.load(root)
    source.check_tree(root, rules, warn=_warn)
    own_scripts = scripts.source_scripts(root)
    for path in own_scripts.values():  # read even when .s2iignore leaves them out
        source.read_file(path)
    return BuildPlan(
        options=options,
        root=root,
        env_layers=layers,
        image_env=environment.merge(*(layer.values for layer in layers)),
        build_env=build_env,
        rules=rules,
        source_scripts=own_scripts,
        labels=image.output_labels(options.builder, str(root), describe(root)),
        mounts=mounts,
        dependencies=dependencies.select(root, rules),
    )


def _ca_bundle(path: Path) -> Path:
    if not path.is_file() or not os.access(path, os.R_OK):
        raise UsageError(
            f"--ca-bundle {path}: not a readable file",
            "on Debian the host's bundle is /etc/ssl/certs/ca-certificates.crt,"
            " on RHEL /etc/pki/tls/certs/ca-bundle.crt",
        )
    return path.resolve()


def _warn(message: str) -> None:
    _log.warning(message)


def _env_layers(root: Path, options: BuildOptions) -> tuple[environment.EnvLayer, ...]:
    """The user's layers, lowest precedence first (the image's own ENV is below all)."""
    layers = []
    s2i_env = root / S2I_ENVIRONMENT
    if s2i_env.is_file():
        values = environment.read_env_file(s2i_env, S2I_ENVIRONMENT, warn=_warn)
        layers.append(environment.EnvLayer(S2I_ENVIRONMENT, values))
    for path in options.env_files:
        values = environment.read_env_file(path, warn=_warn)
        layers.append(environment.EnvLayer(str(path), values))
    cli: dict[str, str] = {}
    for arg in options.env:
        key, value = environment.parse_assignment(arg, "-e")
        cli[key] = value
    if cli:
        layers.append(environment.EnvLayer("-e", cli))
    return tuple(layers)
