"""The command line: parses arguments, prints results, picks exit codes. Nothing else does.

Results (an image ID or tag) go to stdout, one per line, so they can be
captured; logs, build output and errors go to stderr.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

# Only what parsing the command line needs is imported here; each command imports what it
# uses when it runs, so `buildpy --version` and a usage error start quickly, and podman-py
# (with requests and urllib3) is imported only once an engine is needed.
from buildpy import __version__, log, redact
from buildpy.config import PYPROJECT_KEYS, default_builder
from buildpy.errors import (
    BuilderImageError,
    BuildpyError,
    CacheDirError,
    EngineUnavailable,
    Interrupted,
    PublishFailed,
    TimedOut,
    UsageError,
)
from buildpy.registry import PULL_POLICIES, S2I_PULL_POLICIES, PullPolicy

if TYPE_CHECKING:
    from buildpy import build as build_stage
    from buildpy import carry
    from buildpy import plan as build_plan
    from buildpy.config import BuildOptions
    from buildpy.podman import PodmanEngine

REFERENCE = "docs/reference/cli.md"
LOG_FORMATS = ("human", "json", "console", "auto")  # console, auto: older names of human


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in buildpy's form: one ERROR line, a hint, exit 2.
    Subcommands' parsers are of this class too (``add_subparsers`` makes its own kind)."""

    def error(self, message: str) -> NoReturn:
        _report(UsageError(message, f"see `{self.prog} --help`"))
        sys.exit(UsageError.exit_code)


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """-v, -q, --log-format: on the top parser, and again on every subcommand's (``top``
    False) so they may be typed after it; those copies default to SUPPRESS, so an option
    given before the subcommand is not reset by the subcommand's parser."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default(0),
        help="debug log lines too, and a traceback for an internal error",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default(False),
        help="only warnings, errors and the result; no builder output (a failed assemble"
        " still shows its last lines)",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=default("human"),
        metavar="human|json",
        help="log lines on stderr: for people (default, also off a terminal) or structlog"
        " JSON events, one per line",
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="buildpy",
        description="Build Python source into a runnable container image with Podman (S2I).",
        epilog=f"Each command's options: buildpy COMMAND --help. Global options (-v, -q,"
        f" --log-format) go before or after the command. Reference: {REFERENCE} in"
        " buildpy's source; exit codes: docs/reference/exit-codes.md.",
    )
    parser.add_argument("--version", action="version", version=f"buildpy {__version__}")
    _global_options(parser, top=True)
    common = _Parser(add_help=False)
    _global_options(common, top=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(group: Any, name: str, says: str, **more: Any) -> argparse.ArgumentParser:
        made: argparse.ArgumentParser = group.add_parser(
            name,
            help=says,
            description=more.pop("description", says[:1].upper() + says[1:] + "."),
            epilog=f"Reference: {REFERENCE}.",
            parents=[common],
            **more,
        )
        return made

    b = command(commands, "build", "build SOURCE into an image")
    add_build_options(b)
    b.add_argument(
        "--as-containerfile",
        type=Path,
        metavar="DIR",
        help="build nothing: write into DIR a Containerfile and context that `podman build`"
        " or `buildah bud` turns into the same image (new, empty, or written before)",
    )
    _add_format(
        b,
        "the result on stdout: the image's tag (or ID) on one line (text, the default), or"
        " one line of JSON: image (full ID), tag, size, seconds, phases, dependencies_reused"
        " and each stage's *_seconds",
    )
    p = command(
        commands, "plan", "say what `build` would do with SOURCE, and why, starting no container"
    )
    add_build_options(p)
    _add_format(p)

    w = command(
        commands,
        "wheelhouse",
        "collect what building SOURCE installs into DIR, for offline builds",
    )
    w.add_argument("source", type=Path, metavar="SOURCE", help="the application's directory")
    w.add_argument("dir", type=Path, metavar="DIR", help="the wheelhouse (made if missing)")
    _input_options(w)
    w.add_argument(
        "--ca-bundle",
        type=Path,
        metavar="FILE",
        help="CA bundle trusted while collecting (a Podman secret, never in an image)",
    )
    w.add_argument(
        "--network", help="network for the collection: bridge, host, ... (Podman's default)"
    )
    _add_index_options(w)

    bb = command(commands, "builder", "manage buildpy's own builder images")
    bsub = bb.add_subparsers(dest="builder_command", metavar="ACTION", required=True)
    bbuild = command(bsub, "build", "build builder images (only when their inputs changed)")
    bbuild.add_argument("names", nargs="*", metavar="NAME", help="builders to build (default: all)")
    bbuild.add_argument("--base", help="base image to build on (default: the builder's own)")
    bbuild.add_argument("--force", action="store_true", help="rebuild even when up to date")
    command(
        bsub,
        "list",
        "list the builder images buildpy can build, and whether each is built and current",
        description="List buildpy's builder images: name, Containerfile, base image, and"
        " state: `current` (built from today's containerfiles/ and s2i/ on its base),"
        " `outdated` (`buildpy builder build` would rebuild it), `missing` (not built),"
        " `no base` (its base image is missing), or `unknown` (no Podman service answered).",
    )

    c = command(
        commands, "cache", "list, remove, export or import what buildpy keeps between builds"
    )
    csub = c.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    command(csub, "ls", "list cached dependency images and download volumes")
    command(csub, "prune", "remove all cached dependency images and download volumes")
    ce = command(csub, "export", "replace DIR with the cache SOURCE's next build can use (for CI)")
    ce.add_argument("directory", type=Path, metavar="DIR", help="the cache directory to write")
    ce.add_argument("source", type=Path, metavar="SOURCE", help="the application's directory")
    _input_options(ce)
    ci = command(csub, "import", "load a cache directory that `cache export` wrote")
    ci.add_argument("directory", type=Path, metavar="DIR", help="missing or empty: nothing to do")

    u = command(
        commands,
        "usage",
        "show a builder image's usage text",
        description="Run a builder image's S2I usage script (from its"
        " io.openshift.s2i.scripts-url label) in a throwaway container and print what it"
        " says: the variables and files the builder reads. The image is never pulled.",
    )
    u.add_argument(
        "image",
        nargs="?",
        default=default_builder(),
        metavar="IMAGE",
        help=f"the builder image (default: {default_builder()})",
    )

    d = command(commands, "doctor", "check what a build needs here and how to fix it")
    _add_format(d)
    return parser


def _add_format(
    parser: argparse.ArgumentParser, says: str = "output on stdout (default: text)"
) -> None:
    parser.add_argument("--format", choices=("text", "json"), default="text", help=says)


def add_build_options(parser: argparse.ArgumentParser) -> None:
    """SOURCE and the options of a build: `build` and `plan` take the same ones."""
    parser.add_argument("source", type=Path, metavar="SOURCE", help="the application's directory")
    parser.add_argument(
        "-t", "--tag", help="name for the image (default: untagged; its ID is printed)"
    )
    _input_options(parser)
    parser.add_argument(
        "--ca-bundle",
        type=Path,
        metavar="FILE",
        help="CA bundle trusted during assemble only (a Podman secret, never in the image)",
    )
    parser.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="id=NAME,src=FILE",
        help="file (or env=VARIABLE's value) at /run/secrets/NAME during assemble only,"
        " as with `podman build --secret` (may be repeated)",
    )
    parser.add_argument(
        "--network", help="network for assemble: bridge, host, none, ... (Podman's default)"
    )
    _add_index_options(parser)
    parser.add_argument(
        "--scripts-url",
        metavar="URL",
        help="S2I scripts: image:///PATH in the builder, or file://DIR on this host (uploaded);"
        " beats .s2i/bin and the builder's label, script by script (as s2i)",
    )
    parser.add_argument(
        "--wheelhouse",
        type=Path,
        metavar="DIR",
        help="install from this directory (made by `buildpy wheelhouse`) with no index;"
        " mounted read-only during assemble, never in the image",
    )
    parser.add_argument(
        "--incremental",
        action="store_true",
        help="restore what the previous image under --tag (needed) saves with its"
        " save-artifacts script into /tmp/artifacts (S2I); buildpy's own builders save"
        " nothing (their download cache does that job)",
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="no dependency layer reuse and no download cache for this build",
    )
    parser.add_argument(
        "--cache-from",
        type=Path,
        metavar="DIR",
        help="first import the cache in DIR (as `cache import`; a problem is only a warning)",
    )
    parser.add_argument(
        "--cache-to",
        type=Path,
        metavar="DIR",
        help="then export the cache this source's next build can use to DIR (as `cache export`)",
    )
    parser.add_argument(
        "--cache-max",
        metavar="SIZE",
        help="after adding a dependency layer, remove the least recently used ones until they"
        " add at most SIZE (e.g. 20G; off: no limit; default $BUILDPY_CACHE_MAX or 10G)",
    )
    parser.add_argument(
        "--timeout",
        type=duration,
        metavar="DURATION",
        help="stop the build after this long (e.g. 90s, 15m, 1h30m), like Ctrl-C; exit 124",
    )
    _registry_arguments(parser)
    _delivery_arguments(parser)


def _input_options(parser: argparse.ArgumentParser) -> None:
    """What decides a build's inputs: ``build`` and ``plan`` take them, and ``cache export``
    the same, to find the dependency layer that build uses."""
    parser.add_argument("--builder", help=f"S2I builder image (default: {default_builder()})")
    _add_variable_options(parser)


def _add_variable_options(parser: argparse.ArgumentParser) -> None:
    """-e, --env-file (and s2i's -E, --environment-file), --build-env."""
    parser.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="variable for assemble and the image; beats --env-file and .s2i/environment"
        " (may be repeated)",
    )
    parser.add_argument(
        "-E",
        "--env-file",
        "--environment-file",
        dest="env_file",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="file of KEY=VALUE lines for assemble and the image (may be repeated, later"
        " wins);"
        " -E and --environment-file are s2i's spellings",
    )
    parser.add_argument(
        "--build-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="variable for assemble only; never stored in the image (may be repeated)",
    )


def _registry_arguments(b: argparse.ArgumentParser) -> None:
    """Where the builder comes from."""
    b.add_argument(
        "--pull",
        type=_pull_policy,
        default="missing",
        metavar="missing|always|never",
        help="pull the builder: only when it is not in local storage (default), always, never",
    )
    b.add_argument(
        "--pull-policy",
        dest="pull",
        type=_pull_policy,
        default=argparse.SUPPRESS,
        metavar="if-not-present|always|never",
        help="--pull with s2i's spellings",
    )
    tls = b.add_mutually_exclusive_group()
    tls.add_argument(
        "--tls-verify",
        nargs="?",
        const=True,
        type=_boolean,
        metavar="true|false",
        help="verify registries' TLS certificates (default: as registries.conf says)",
    )
    tls.add_argument(
        "--no-tls-verify",
        dest="tls_verify",
        action="store_const",
        const=False,
        help="plain HTTP or unverified TLS to registries (Podman's --tls-verify=false)",
    )


def _delivery_arguments(b: argparse.ArgumentParser) -> None:
    """Where the image goes besides local storage."""
    b.add_argument(
        "--push", action="store_true", help="push the image after the build (needs --tag)"
    )
    b.add_argument(
        "--output",
        action="append",
        default=[],
        metavar="TYPE:PATH",
        help="also write the image to a file: oci-archive:PATH or docker-archive:PATH"
        " (may be repeated)",
    )


def _pull_policy(value: str) -> PullPolicy:
    policy = S2I_PULL_POLICIES.get(value) or (value if value in PULL_POLICIES else None)
    if policy is None:
        raise argparse.ArgumentTypeError(
            f"{value!r}: use missing (or if-not-present), always or never"
        )
    return policy


def _boolean(value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(
            f"{value!r}: write --tls-verify=true, --tls-verify=false or --no-tls-verify"
        )
    return value.lower() == "true"


def _add_index_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--index-url",
        metavar="URL",
        help="package index for assemble only (pip, pipenv, micropipenv, uv); lock files'"
        " PyPI sources are redirected to it",
    )
    p.add_argument(
        "--extra-index-url",
        action="append",
        default=[],
        metavar="URL",
        help="another index, with --index-url (may be repeated)",
    )
    p.add_argument(
        "--trusted-host",
        action="append",
        default=[],
        metavar="HOST",
        help="an index host trusted without valid TLS, with --index-url (may be repeated)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run one command and return its exit code. Without ``argv`` it is the
    program itself (the console script, ``python -m buildpy``), which ends when it returns:
    see ``_GarbageCollection``."""
    global _collection
    _collection = _GarbageCollection() if argv is None else None
    try:
        args = _parser().parse_args(argv)
        log.configure(-1 if args.quiet else args.verbose, json=args.log_format == "json")
        previous = signal.signal(signal.SIGTERM, _sigterm)
        try:
            return _exit_code(args, debug=args.verbose > 0)
        finally:
            signal.signal(signal.SIGTERM, previous)
    finally:
        if _collection is not None:
            _collection.ending()


class _GarbageCollection:
    """The cycle collector in a buildpy process (main without ``argv``; a caller such as a
    test keeps its own collector as it is).

    None while the modules are imported (400 of them for a build, podman-py's with
    requests and urllib3 the most: what they make lives until the end, and collecting
    while it piles up cost about 7 ms of CPU); then everything made so far is frozen and
    collection resumes for the work itself (``started``, once the engine's client is
    loaded); at the end everything is frozen again, so the interpreter's shutdown does not
    collect a heap it is about to free (about 22 ms). Measured on a source-only rebuild.
    """

    def __init__(self) -> None:
        gc.disable()
        self._loading = True

    def started(self) -> None:
        if self._loading:  # once: a command may open the engine more than once
            self._loading = False
            gc.freeze()
            gc.enable()

    def ending(self) -> None:
        gc.freeze()


_collection: _GarbageCollection | None = None


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _exit_code(args: argparse.Namespace, debug: bool) -> int:
    """Run the command; turn every failure into an ERROR line, a hint and an exit code."""
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        error: BuildpyError = Interrupted("interrupted; the working container was removed")
    except BuildpyError as exc:
        error = exc
    except Exception as exc:  # a bug: say so, with the traceback on request
        if debug:
            import traceback

            traceback.print_exc()
        error = BuildpyError(
            f"internal error: {type(exc).__name__}: {exc}",
            "run again with -v for a traceback, and report it",
        )
    _report(error)
    return error.exit_code


def _report(exc: BuildpyError) -> None:
    print(f"ERROR: {redact.mask(exc.message)}", file=sys.stderr)
    if exc.hint:
        print(f"  hint: {redact.mask(exc.hint)}", file=sys.stderr)


@contextmanager
def _engine() -> Iterator[PodmanEngine]:
    """The Podman engine for one command: a service found or started, closed afterwards."""
    from buildpy.service import connect

    with ExitStack() as stack:
        try:  # the client is imported while a private service starts (``connect``)
            url = stack.enter_context(connect(meanwhile=_load_client))
        finally:  # the modules are loaded (or, with no service, will not be): work follows
            if _collection is not None:
                _collection.started()
        from buildpy.podman import PodmanEngine  # loaded by now

        yield stack.enter_context(PodmanEngine(url))


def _load_client() -> None:
    """Import the engine's client: podman-py, requests and urllib3, about 60 ms."""
    import buildpy.podman  # noqa: F401


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "build":
        return _build(args)
    if args.command == "plan":
        return _plan(args)
    if args.command == "builder":
        return _builder(args)
    if args.command == "cache":
        return _cache(args)
    if args.command == "doctor":
        return _doctor(args)
    if args.command == "wheelhouse":
        return _wheelhouse(args)
    return _usage(args)


def duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``1h30m`` in seconds (argparse turns ValueError into exit 2)."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?", text.strip())
    if not text.strip() or parts is None:
        raise ValueError(text)
    hours, minutes, seconds = (float(part or 0) for part in parts.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ValueError(text)
    return total


@contextmanager
def _deadline(seconds: float | None) -> Iterator[None]:
    """Raise TimedOut in the main thread once ``seconds`` have passed (None: never)."""
    if seconds is None:
        yield
        return

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimedOut(
            f"the build took longer than --timeout ({seconds:g} s) and was stopped;"
            " its working container was removed",
            "raise --timeout, or find out what is slow with -v",
        )

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _build(args: argparse.Namespace) -> int:
    if args.as_containerfile is not None:
        return _as_containerfile(args)
    with _deadline(args.timeout):
        return _build_in_time(args)


def _build_in_time(args: argparse.Namespace) -> int:
    from buildpy import environment
    from buildpy import plan as build_plan

    plan = build_plan.make(_build_options(args))
    logger = log.get("buildpy")
    origins = environment.origins(plan.env_layers)
    logger.debug("image variables", origins={key: where for key, (_, where) in origins.items()})
    with _engine() as engine, _builder_output(args.quiet) as output:
        if args.cache_from is not None:
            _import_for_build(engine, args.cache_from)
        elif plan.options.pull != "always":  # (always: the builder is pulled first)
            engine.expect_image(plan.options.builder)  # asked while the rest is imported
        from buildpy import build as build_stage
        from buildpy import publish

        result = build_stage.run(plan, engine, output=output)
        _log_built(result)
        try:
            publish.deliver(engine, plan.delivery, result.image_id, result.tag)
        except PublishFailed:
            _print_built(result, args.format)  # it exists locally: exit 10 says so
            raise
        _print_built(result, args.format)
        if args.cache_to is not None:  # the image stays built and printed if this fails
            _export(engine, plan, args.cache_to)
    return 0


@contextmanager
def _builder_output(quiet: bool) -> Iterator[Any]:
    """Where the builder's output goes: set apart in the log, or (-q) nowhere; a failed
    assemble still quotes its last lines in its ERROR."""
    if quiet:
        with open(os.devnull, "wb") as silent:
            yield silent
        return
    lines = log.output()
    try:
        yield lines
    finally:
        lines.end_line()


def _as_containerfile(args: argparse.Namespace) -> int:
    """`build --as-containerfile DIR`: the build as a Containerfile; no Podman involved."""
    from buildpy import containerfile
    from buildpy import plan as build_plan

    given = {"--incremental": args.incremental, "--push": args.push, "--output": args.output}
    given.update({"--cache-from": args.cache_from, "--cache-to": args.cache_to})
    given["--scripts-url"] = args.scripts_url
    containerfile.refuse(name for name, value in given.items() if value)
    written = containerfile.write(build_plan.make(_build_options(args)), args.as_containerfile)
    log.get("buildpy").info(
        "containerfile written",
        directory=str(written.directory),
        phases=written.phases,
        build=shlex.join(written.command),
    )
    if args.format == "json":
        import json

        found = {"directory": str(written.directory), "phases": written.phases}
        print(json.dumps({**found, "command": list(written.command)}))
    else:
        print(written.directory)
    return 0


def _build_options(args: argparse.Namespace) -> BuildOptions:
    """The build options of `build` and `plan`: the command line over [tool.buildpy]."""
    from buildpy.config import with_pyproject

    return with_pyproject(_command_line(args), _explicit(args))


def _command_line(args: argparse.Namespace) -> BuildOptions:
    from buildpy.config import BuildOptions

    return BuildOptions(
        source=args.source,
        builder=args.builder or default_builder(),
        tag=args.tag,
        env_files=tuple(args.env_file),
        env=tuple(args.env),
        build_env=tuple(args.build_env),
        ca_bundle=args.ca_bundle,
        secrets=tuple(args.secret),
        network=args.network,
        cache=not args.no_cache,
        incremental=args.incremental,
        pull=args.pull,
        tls_verify=args.tls_verify,
        push=args.push,
        outputs=tuple(args.output),
        wheelhouse=args.wheelhouse,
        index_url=args.index_url,
        extra_index_urls=tuple(args.extra_index_url),
        trusted_hosts=tuple(args.trusted_host),
        scripts_url=args.scripts_url,
        cache_max=_cache_max(args),
    )


def _cache_max(args: argparse.Namespace) -> int | None:
    """``--cache-max``, else ``BUILDPY_CACHE_MAX``, else the default."""
    from buildpy import cachesize

    return cachesize.configured_max(getattr(args, "cache_max", None), os.environ)


def _explicit(args: argparse.Namespace) -> frozenset[str]:
    """The settings [tool.buildpy] may also give that the command line gave."""
    return frozenset(k for k in PYPROJECT_KEYS if getattr(args, k) is not None)


def _built(result: build_stage.BuildResult) -> dict[str, Any]:
    """What the ``built`` log line and ``build --format json`` say about a build, but the
    image (the log shortens its ID)."""
    return {
        "tag": result.tag,
        "size": result.size,
        "seconds": round(result.seconds, 3),
        "assemble_seconds": round(result.assemble_seconds, 3),
        "phases": result.phases,
        "dependencies_reused": result.dependencies_reused,
        **{f"{k}_seconds": round(v, 3) for k, v in result.times.items() if k != "assemble"},
    }


def _log_built(result: build_stage.BuildResult) -> None:
    image = result.image_id.split(":", 1)[-1][:12]
    log.get("buildpy").info("built", image=image, **_built(result))


def _print_built(result: build_stage.BuildResult, output_format: str) -> None:
    """The result on stdout: the tag (or the ID), or, as JSON, one object on one line."""
    if output_format == "json":
        import json

        print(json.dumps({"image": result.image_id, **_built(result)}), flush=True)
    else:
        print(result.tag or result.image_id, flush=True)


def _input_build_options(args: argparse.Namespace, **more: Any) -> BuildOptions:
    """The options that decide a build's inputs (``cache export``, ``wheelhouse``), and
    ``more``, over the source's [tool.buildpy]."""
    from buildpy.config import BuildOptions, with_pyproject

    given = frozenset(k for k in ("builder", "network") if getattr(args, k, None) is not None)
    return with_pyproject(
        BuildOptions(
            source=args.source,
            builder=args.builder or default_builder(),
            env_files=tuple(args.env_file),
            env=tuple(args.env),
            build_env=tuple(args.build_env),
            **more,
        ),
        given,
    )


def _wheelhouse(args: argparse.Namespace) -> int:
    """`buildpy wheelhouse SOURCE DIR`: what building SOURCE installs, collected into DIR."""
    from dataclasses import replace

    from buildpy import indexes, wheelhouse
    from buildpy import plan as build_plan

    options = _input_build_options(
        args,
        ca_bundle=args.ca_bundle,
        network=args.network,
        index_url=args.index_url,
        extra_index_urls=tuple(args.extra_index_url),
        trusted_hosts=tuple(args.trusted_host),
        cache=False,
    )
    plan = build_plan.make(replace(options, tag=None))  # a wheelhouse makes no image
    target = indexes.wheelhouse_to_fill(args.dir)
    with _engine() as engine, _builder_output(args.quiet) as output:
        filled = wheelhouse.fill(plan, target, engine, output)
    log.get("buildpy").info(
        "wheelhouse ready",
        path=str(filled.path),
        added=len(filled.added),
        total=filled.total,
        seconds=round(filled.seconds, 3),
    )
    print(filled.path)
    return 0


def _plan(args: argparse.Namespace) -> int:
    """What `build` would do with the same options, on stdout; nothing is built."""
    from buildpy import plan as build_plan
    from buildpy import preview
    from buildpy.config import setting_origins

    with _deadline(args.timeout):
        plan = build_plan.make(_build_options(args))
        origins = setting_origins(_command_line(args), _explicit(args))
        with _engine() as engine:
            found = preview.make(plan, engine, origins)
    if args.format == "json":
        import json

        print(json.dumps(preview.report(found), indent=2))
    else:
        sys.stdout.write(preview.render(found))
    return 0


def _builder(args: argparse.Namespace) -> int:
    from buildpy import builders

    if args.builder_command == "list":
        return _builder_list()
    chosen = [builders.lookup(n) for n in args.names] or list(builders.BUILDERS.values())
    with _engine() as engine:
        for builder in chosen:
            builders.ensure(engine, builder, base=args.base, force=args.force)
            print(builder.tag)
    return 0


def _builder_list() -> int:
    """One line per builder: tag, Containerfile, base, and whether it is built and current
    (``unknown`` when no Podman service answers or the checkout's files are missing)."""
    from buildpy import builders

    chosen = sorted(builders.BUILDERS.items())
    states = {name: "unknown" for name, _ in chosen}
    try:
        context = builders.context_tar(builders.data_root())
        with _engine() as engine:
            states = {name: builders.state(engine, b, context) for name, b in chosen}
    except (EngineUnavailable, BuilderImageError) as exc:
        log.get("buildpy").warning(
            "cannot tell which builders are built", error=exc.message, hint=exc.hint
        )
    for name, builder in chosen:
        print(f"{builder.tag}\t{builder.containerfile}\tbase={builder.base}\t{states[name]}")
    return 0


def _usage(args: argparse.Namespace) -> int:
    from buildpy.usage import usage

    with _engine() as engine:
        text = usage(engine, args.image or default_builder())
    sys.stdout.write(text)
    return 0


def _cache(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from buildpy import cache, leftovers, staticfiles

    if args.cache_command == "export":
        return _cache_export(args)
    if args.cache_command == "import":
        return _cache_import(args)
    with _engine() as engine:
        swept = leftovers.sweep(engine) if args.cache_command == "prune" else []
        if args.cache_command == "prune":
            removed, kept = cache.prune(engine)
            sections = [("removed", removed), ("in-use", kept)]
        else:
            sections = [("cached", cache.listing(engine))]
        listed = [image for _, found in sections for image in found.images]
        measured = {layer.image.id: layer for layer in cache.layers(engine, listed)}
    static = staticfiles.prune() if args.cache_command == "prune" else 0
    for name in swept:
        print(f"removed\t{'volume' if leftovers.is_volume(name) else 'container'}\t{name}")
    for path in leftovers.sweep_dirs() if args.cache_command == "prune" else []:
        print(f"removed\tdirectory\t{path}")
    for verb, found in sections:
        for item in found.images:
            tags = ",".join(item.tags) or item.id[:12]
            layer = measured[item.id]
            used = datetime.fromtimestamp(layer.last_used, timezone.utc)
            print(
                f"{verb}\timage\t{tags}\t{item.size / 1e6:.1f} MB\t{item.created}"
                f"\t{layer.adds / 1e6:.1f} MB\t{used.isoformat(timespec='seconds')}"
            )
        for name, mountpoint in found.volumes:
            print(f"{verb}\tvolume\t{name}\t{mountpoint}")
    if static:
        print(f"removed\tstatic\t{staticfiles.STORE}\t{static} kept collectstatic results")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from buildpy import doctor  # only this command needs it

    checks = doctor.diagnose(doctor.LocalHost())
    if args.format == "json":
        import json

        print(json.dumps(doctor.report(checks), indent=2))
    else:
        sys.stdout.write(doctor.render(checks))
    failed = [c.name for c in checks if c.status == "fail"]
    if failed:
        raise EngineUnavailable(
            f"{len(failed)} check{'s' if len(failed) > 1 else ''} failed: {', '.join(failed)}",
            "apply the fix under each failed check, then run `buildpy doctor` again",
        )
    return 0


def _cache_export(args: argparse.Namespace) -> int:
    from buildpy import plan as build_plan

    plan = build_plan.make(_input_build_options(args))
    with _engine() as engine:
        exported = _export(engine, plan, args.directory)
    for image in exported.manifest.images:
        names = ",".join(image.names)
        print(f"exported\timage\t{names}\t{_mb(image.file.size)}\t{image.file.name}")
    downloads = exported.manifest.downloads
    if downloads is not None:
        wheels = f"{downloads.wheels} wheels"
        print(f"exported\tdownloads\t{wheels}\t{_mb(downloads.file.size)}\t{downloads.file.name}")
    static = exported.manifest.static
    if static is not None:
        print(f"exported\tstatic\t{static.name}\t{_mb(static.file.size)}\t{static.file.name}")
    return 0


def _export(engine: PodmanEngine, plan: build_plan.BuildPlan, directory: Path) -> carry.Exported:
    from buildpy import carry
    from buildpy.registry import require_builder

    started = time.monotonic()
    builder = require_builder(engine, plan.options.builder)
    exported = carry.export(engine, plan, builder, directory)
    logger = log.get("buildpy")
    if exported.reason is not None:
        logger.warning("no dependency layer to export", reason=exported.reason)
    files = exported.manifest.files
    logger.info(
        "cache exported",
        directory=str(directory),
        bytes=sum(f.size for f in files),
        files=len(files),
        kept=len(exported.kept),
        seconds=round(time.monotonic() - started, 3),
    )
    return exported


def _cache_import(args: argparse.Namespace) -> int:
    from buildpy import cachedir

    if cachedir.read(args.directory) is None:  # before any engine: a first CI run is quick
        log.get("buildpy").info("no cache to import", directory=str(args.directory))
        return 0
    with _engine() as engine:
        imported = _import(engine, args.directory)
    for verb, images in (("imported", imported.loaded), ("present", imported.present)):
        for image in images:
            print(f"{verb}\timage\t{','.join(image.names)}\t{_mb(image.file.size)}")
    if imported.manifest is not None and imported.manifest.downloads is not None:
        print(f"imported\tdownloads\t{imported.wheels} wheels")
    if imported.static is not None:
        print(f"imported\tstatic\t{imported.static.name}")
    return 0


def _import(engine: PodmanEngine, directory: Path) -> carry.Imported:
    from buildpy import carry

    started = time.monotonic()
    imported = carry.import_cache(engine, directory)
    log.get("buildpy").info(
        "cache imported" if imported.manifest else "no cache to import",
        directory=str(directory),
        loaded=len(imported.loaded),
        present=len(imported.present),
        wheels=imported.wheels,
        static_files=imported.static is not None,
        seconds=round(time.monotonic() - started, 3),
    )
    return imported


def _import_for_build(engine: PodmanEngine, directory: Path) -> None:
    """``build --cache-from``: a cache that cannot be imported only costs this build time."""
    try:
        _import(engine, directory)
    except (CacheDirError, BuilderImageError) as exc:
        log.get("buildpy").warning("building without the cache", error=exc.message, hint=exc.hint)


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
