"""The build, as small stages: plan, inspect the builder, assemble, commit.

``plan`` reads the source and the configuration and touches no engine; ``run``
carries a plan out against an ``Engine``. The working container belongs to a
``with`` block and is removed after success, failure and Ctrl-C alike.

How variables reach assemble: the image's variables (``.s2i/environment``,
``--env-file``, ``-e``) are the working container's environment, so the commit
keeps them. Build-only variables (``--build-env``, the CA bundle's paths) travel
in a file inside the uploaded archive that a tiny wrapper sources and deletes
before it execs assemble: the container's configuration never holds them and
the committed layer has no trace of the file.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from buildpy import environment, gitinfo, image, log, scripts, source
from buildpy.config import BuildOptions
from buildpy.engine import CommitSpec, ContainerSpec, Engine, ImageInfo, Mount
from buildpy.errors import AssembleFailed, BuilderImageError, SourceError, UsageError

_log = log.get(__name__)

S2I_ENVIRONMENT = ".s2i/environment"
BUILD_DIR = ".buildpy"  # under /tmp, removed before assemble starts
CA_TARGET = "/dev/shm/buildpy-ca-bundle.crt"  # a tmpfs: the mount point is never committed
CA_VARIABLES = (
    "PIP_CERT",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "NODE_EXTRA_CA_CERTS",
)
WRAPPER = (
    f"if [ -f /tmp/{BUILD_DIR}/env ]; then . /tmp/{BUILD_DIR}/env || exit 1; fi; "
    f'rm -rf /tmp/{BUILD_DIR}; exec "$@"'
)
TAIL_LINES = 20


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


@dataclass(frozen=True)
class BuildResult:
    image_id: str
    tag: str | None
    seconds: float
    assemble_seconds: float


def plan(
    options: BuildOptions, describe: Callable[[Path], gitinfo.GitInfo | None] = gitinfo.describe
) -> BuildPlan:
    """Read the source and configuration into a plan; no engine involved."""
    root = _source_root(options.source)
    layers = _env_layers(root, options)
    build_env: dict[str, str] = {}
    mounts: tuple[Mount, ...] = ()
    if options.ca_bundle is not None:
        mounts = (Mount(str(_ca_bundle(options.ca_bundle)), CA_TARGET),)
        build_env.update({name: CA_TARGET for name in CA_VARIABLES})
    for arg in options.build_env:
        key, value = environment.parse_assignment(arg, "--build-env")
        build_env[key] = value
    return BuildPlan(
        options=options,
        root=root,
        env_layers=layers,
        image_env=environment.merge(*(layer.values for layer in layers)),
        build_env=build_env,
        rules=source.IgnoreRules.load(root),
        source_scripts=scripts.source_scripts(root),
        labels=image.output_labels(options.builder, str(root), describe(root)),
        mounts=mounts,
    )


def _source_root(path: Path) -> Path:
    if not path.exists():
        raise SourceError(f"source {path} does not exist", "give the directory of your application")
    if not path.is_dir():
        raise SourceError(f"source {path} is not a directory", "give the application's directory")
    return path.resolve()


def _ca_bundle(path: Path) -> Path:
    if not path.is_file() or not os.access(path, os.R_OK):
        raise UsageError(
            f"--ca-bundle {path}: not a readable file",
            "on Debian the host's bundle is /etc/ssl/certs/ca-certificates.crt,"
            " on RHEL /etc/pki/tls/certs/ca-bundle.crt",
        )
    return path.resolve()


def _env_layers(root: Path, options: BuildOptions) -> tuple[environment.EnvLayer, ...]:
    """The user's layers, lowest precedence first (the image's own ENV is below all)."""
    layers = []
    s2i_env = root / S2I_ENVIRONMENT
    if s2i_env.is_file():
        layers.append(
            environment.EnvLayer(
                S2I_ENVIRONMENT, environment.read_env_file(s2i_env, S2I_ENVIRONMENT)
            )
        )
    for path in options.env_files:
        layers.append(environment.EnvLayer(str(path), environment.read_env_file(path)))
    cli: dict[str, str] = {}
    for arg in options.env:
        key, value = environment.parse_assignment(arg, "-e")
        cli[key] = value
    if cli:
        layers.append(environment.EnvLayer("-e", cli))
    return tuple(layers)


def run(plan: BuildPlan, engine: Engine, output: BinaryIO | None = None) -> BuildResult:
    """Carry the plan out: working container, upload, assemble, commit."""
    started = time.monotonic()
    out = output if output is not None else sys.stderr.buffer
    builder = engine.image(plan.options.builder)
    chosen = scripts.resolve(builder.labels, set(plan.source_scripts), builder.ref)
    spec = ContainerSpec(
        image=builder.id,
        command=("/bin/sh", "-c", WRAPPER, "buildpy-assemble", chosen.assemble),
        user=builder.user,
        env=plan.image_env,
        labels=plan.labels,
        mounts=plan.mounts,
        network=plan.options.network,
        name=f"buildpy-{secrets.token_hex(6)}",
    )
    with working_container(engine, spec) as container:
        uid, gid = owner(engine, container, builder)
        engine.upload(container, scripts.UPLOAD_DIR, _archive(plan, uid, gid))
        assemble_started = time.monotonic()
        status, tail = _assemble(engine, container, out)
        assemble_seconds = time.monotonic() - assemble_started
        if status != 0:
            raise AssembleFailed(status, tail, _assemble_hint(status))
        repository, tag = image.split_tag(plan.options.tag) if plan.options.tag else (None, None)
        changes = image.commit_changes(builder, chosen.run)
        image_id = engine.commit(container, CommitSpec(changes, repository, tag))
    return BuildResult(image_id, plan.options.tag, time.monotonic() - started, assemble_seconds)


@contextmanager
def working_container(engine: Engine, spec: ContainerSpec) -> Iterator[str]:
    """A container that is gone when the block ends, however it ends."""
    container = engine.create(spec)
    _log.debug("working container created", container=spec.name, image=spec.image)
    try:
        yield container
    finally:
        try:
            engine.remove(container)
        except Exception as exc:  # never mask the build's own error
            _log.warning(
                "could not remove the working container",
                container=spec.name,
                error=str(exc),
                hint=f"remove it with `podman rm -f {spec.name}`",
            )


def owner(engine: Engine, container: str, builder: ImageInfo) -> tuple[int, int]:
    """Numeric uid and gid of the builder's user, for the uploaded files."""
    name, _, group = builder.user.partition(":")
    if not name:
        return 0, 0
    if name.isdigit() and (group.isdigit() or not group):
        gid = int(group) if group else _passwd_gid(engine, container, name) or 0
        return int(name), gid
    passwd = engine.read_file(container, "/etc/passwd") or b""
    for line in passwd.decode(errors="replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and name in (fields[0], fields[2]):
            return int(fields[2]), int(group) if group.isdigit() else int(fields[3])
    raise BuilderImageError(
        f"builder image {builder.ref} runs as user {builder.user!r}, which /etc/passwd lacks",
        "use a numeric USER (e.g. 1001) in the builder image",
    )


def _passwd_gid(engine: Engine, container: str, uid: str) -> int | None:
    passwd = engine.read_file(container, "/etc/passwd") or b""
    for line in passwd.decode(errors="replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[2] == uid and fields[3].isdigit():
            return int(fields[3])
    return None


def _archive(plan: BuildPlan, uid: int, gid: int) -> Iterator[bytes]:
    """The upload for /tmp: src/, scripts/ from .s2i/bin, and the build-only env file."""
    extra = [
        source.Member(f"scripts/{name}", _read_script(path), 0o755)
        for name, path in sorted(plan.source_scripts.items())
    ]
    if plan.build_env:
        script = environment.shell_export_script(plan.build_env)
        extra.append(source.Member(f"{BUILD_DIR}/env", script.encode(), 0o600))
    return source.tar_stream(
        plan.root,
        rules=plan.rules,
        dest="src",
        uid=uid,
        gid=gid,
        extra=extra,
        warn=lambda message: _log.warning(message),
    )


def _read_script(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from exc


def _assemble(engine: Engine, container: str, out: BinaryIO) -> tuple[int, list[str]]:
    """Start assemble, stream its output to ``out``, return its status and last lines."""
    tail = _Tail(TAIL_LINES)
    engine.start(container)
    for chunk in engine.logs(container):
        out.write(chunk)
        out.flush()
        tail.feed(chunk)
    return engine.wait(container), tail.lines()


def _assemble_hint(status: int) -> str:
    if status in (126, 127):
        return "the assemble script could not be executed: check it exists and is executable"
    if status in (137, 143):
        return "assemble was killed (out of memory, or stopped from outside)"
    return "fix the error shown above in the assemble output, then build again"


class _Tail:
    """The last ``size`` lines of a byte stream, decoded for an error message."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._lines: deque[str] = deque(maxlen=size)
        self._partial = b""

    def feed(self, chunk: bytes) -> None:
        data = self._partial + chunk
        *complete, self._partial = data.split(b"\n")
        for line in complete:
            self._lines.append(line.decode(errors="replace").rstrip("\r"))
        if len(self._partial) > 64 * 1024:
            self._lines.append(self._partial.decode(errors="replace"))
            self._partial = b""

    def lines(self) -> list[str]:
        lines = list(self._lines)
        if self._partial:
            lines.append(self._partial.decode(errors="replace"))
        return lines[-self._size :]


def usage(engine: Engine, ref: str) -> str:
    """What the builder's usage script prints (S2I's `s2i usage`)."""
    builder = engine.image(ref)
    chosen = scripts.image_scripts_dir(builder.labels, ref)
    if chosen is None:
        raise BuilderImageError(
            f"{ref} has no io.openshift.s2i.scripts-url label, so it has no usage script",
            "is it an S2I builder image?",
        )
    spec = ContainerSpec(
        image=builder.id,
        command=(f"{chosen}/usage",),
        user=builder.user,
        name=f"buildpy-usage-{secrets.token_hex(6)}",
    )
    with working_container(engine, spec) as container:
        engine.start(container)
        text = b"".join(engine.logs(container))
        status = engine.wait(container)
    if status != 0:
        raise BuilderImageError(f"{ref}'s usage script exited with status {status}")
    return text.decode(errors="replace")
