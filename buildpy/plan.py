"""The build plan: everything decided from the source and the options, before any engine work.

``make`` reads the source directory, its ``.s2i/environment``, ``--env-file`` and
``-e`` (see ``environment`` for the precedence), the build-only values
(``--build-env``, ``--index-url``) and files (the CA bundle, ``--secret``: read
here, on the client, see ``buildfiles``), the wheelhouse, the ignore rules, the
source's own S2I scripts, the output labels and the files that decide
dependencies, and walks the source tree once (an unreadable file, a socket or a
huge file is reported here, not halfway through the upload). Every user error that
can be found without Podman is found here, so a bad option never costs a container.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from buildpy import (
    buildfiles,
    dependencies,
    environment,
    gitinfo,
    image,
    indexes,
    log,
    publish,
    scripts,
    source,
)
from buildpy.buildfiles import BuildFile
from buildpy.config import BuildOptions
from buildpy.errors import UsageError

_log = log.get(__name__)
_NOTHING = source.TreeSize()  # a plan made without walking its tree (tests) splits nothing

S2I_ENVIRONMENT = ".s2i/environment"
CA_TARGET = "/dev/shm/buildpy-ca-bundle.crt"  # a tmpfs: the mount point is never committed
CA_HINT = (
    "on Debian the host's bundle is /etc/ssl/certs/ca-certificates.crt,"
    " on RHEL /etc/pki/tls/certs/ca-bundle.crt"
)
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
    files: tuple[BuildFile, ...]  # read on this side; assemble sees them, the image never
    dependencies: dependencies.DependencyFiles
    delivery: publish.Delivery
    build_layers: tuple[environment.EnvLayer, ...] = ()  # where build_env's values come from
    wheelhouse: indexes.Wheelhouse | None = None
    scripts_url: scripts.ScriptsURL | None = None  # --scripts-url, checked
    source_size: source.TreeSize = _NOTHING  # what the upload of the tree holds

    @property
    def uploaded_scripts(self) -> dict[str, Path]:
        """The scripts of this host that go to /tmp/scripts: --scripts-url file://
        ones, then the source's .s2i/bin (see ``scripts.uploaded``)."""
        return scripts.uploaded(self.scripts_url, self.source_scripts)

    def script_origin(self, name: str) -> str | None:
        """Where the script ``name`` comes from, None when from the builder's label."""
        return scripts.origin(name, self.scripts_url, self.source_scripts)


def make(
    options: BuildOptions,
    describe: Callable[[Path], gitinfo.GitInfo | None] = gitinfo.describe,
    environ: Mapping[str, str] | None = None,
) -> BuildPlan:
    """Read the source and configuration into a plan; no engine involved. ``environ`` is
    where ``--secret id=NAME,env=VAR`` values come from (default: this process's)."""
    root = source.source_root(options.source)
    if options.tag is not None:
        image.check_reference(options.tag, "--tag")
    if options.incremental and not options.tag:
        raise UsageError(
            "--incremental needs --tag: the previous image under that tag gives the artifacts",
            "add --tag NAME: the image to take the artifacts from, and the new image's name",
        )
    delivery = _delivery(options)
    layers = _env_layers(root, options)
    files, ca_env = _build_files(options, os.environ if environ is None else environ)
    build_layers = _build_layers(ca_env, options)
    rules = source.IgnoreRules.load(root)
    size = source.check_tree(root, rules, warn=_warn)
    own_scripts = scripts.source_scripts(root)
    given = None if options.scripts_url is None else scripts.parse_url(options.scripts_url)
    for path in scripts.uploaded(given, own_scripts).values():  # even if .s2iignore'd
        source.read_file(path)
    return BuildPlan(
        options=options,
        root=root,
        env_layers=layers,
        image_env=environment.merge(*(layer.values for layer in layers)),
        build_env=environment.merge(*(layer.values for layer in build_layers)),
        rules=rules,
        source_scripts=own_scripts,
        labels=image.output_labels(options.builder, str(root), describe(root)),
        files=files,
        dependencies=dependencies.select(root, rules),
        delivery=delivery,
        build_layers=build_layers,
        wheelhouse=_wheelhouse(options),
        scripts_url=given,
        source_size=size,
    )


def _build_files(
    options: BuildOptions, environ: Mapping[str, str]
) -> tuple[tuple[BuildFile, ...], dict[str, str]]:
    """The CA bundle and the secrets, read now; the CA variables that point at the bundle."""
    files = buildfiles.parse_secrets(options.secrets, environ)
    if options.ca_bundle is None:
        return files, {}
    data = buildfiles.read_file(options.ca_bundle, "--ca-bundle", CA_HINT)
    return (BuildFile("--ca-bundle", CA_TARGET, data), *files), dict.fromkeys(
        CA_VARIABLES, CA_TARGET
    )


def _delivery(options: BuildOptions) -> publish.Delivery:
    """--output and --push, checked before any engine work."""
    if options.push and not options.tag:
        raise UsageError(
            "--push needs --tag: the tag names the registry and repository to push to",
            "e.g. --tag registry.example:5000/myapp:1.0 --push",
        )
    outputs = tuple(publish.parse_output(value) for value in options.outputs)
    return publish.Delivery(outputs, options.push, options.tls_verify)


def _warn(message: str) -> None:
    _log.warning(message)


def _env_layers(root: Path, options: BuildOptions) -> tuple[environment.EnvLayer, ...]:
    """The user's layers, lowest precedence first (the image's own ENV is below all)."""
    layers = []
    s2i_env = root / S2I_ENVIRONMENT
    if s2i_env.is_file():
        layers.append(environment.read_env_layer(s2i_env, S2I_ENVIRONMENT, warn=_warn))
    for path in options.env_files:
        layer = environment.read_env_layer(path, warn=_warn)
        layers.append(replace(layer, origin=f"--env-file {path}"))
    cli = _assignments(options.env, "-e")
    if cli:
        layers.append(environment.EnvLayer("-e", cli))
    return tuple(layers)


def _build_layers(
    ca_env: Mapping[str, str], options: BuildOptions
) -> tuple[environment.EnvLayer, ...]:
    """Build-only values, lowest precedence first: the CA bundle's paths, the index
    (--index-url and friends), --build-env."""
    layers = []
    if ca_env:
        layers.append(environment.EnvLayer("--ca-bundle", ca_env))
    if options.index_url is not None:
        index = indexes.PackageIndex.parse(
            options.index_url, options.extra_index_urls, options.trusted_hosts
        )
        layers.append(environment.EnvLayer("--index-url", index.variables()))
    elif options.extra_index_urls or options.trusted_hosts:
        raise UsageError("--extra-index-url and --trusted-host need --index-url")
    given = _assignments(options.build_env, "--build-env")
    if given:
        layers.append(environment.EnvLayer("--build-env", given))
    return tuple(layers)


def _wheelhouse(options: BuildOptions) -> indexes.Wheelhouse | None:
    if options.wheelhouse is None:
        return None
    if options.index_url is not None:
        raise UsageError(
            "--wheelhouse and --index-url exclude each other: a wheelhouse build uses no index",
            "add what is missing to the wheelhouse with `buildpy wheelhouse`, or drop --wheelhouse",
        )
    return indexes.wheelhouse_to_read(options.wheelhouse)


def _assignments(args: tuple[str, ...], option: str) -> dict[str, str]:
    """``KEY=VALUE`` arguments in order, a later one winning."""
    return dict(environment.parse_assignment(arg, option) for arg in args)
