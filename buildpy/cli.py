"""The command line: parses arguments, prints results, picks exit codes. Nothing else does.

Results (an image ID or tag) go to stdout, one per line, so they can be
captured; logs, build output and errors go to stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import NoReturn

from buildpy import __version__, builders, cache, environment, leftovers, log
from buildpy import build as build_stage
from buildpy import plan as build_plan
from buildpy.config import DEFAULT_BUILDER, BuildOptions, with_pyproject
from buildpy.errors import BuildpyError, EngineUnavailable, Interrupted, TimedOut, UsageError
from buildpy.podman import PodmanEngine
from buildpy.service import connect
from buildpy.usage import usage


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in buildpy's form: one ERROR line, a hint, exit 2."""

    def error(self, message: str) -> NoReturn:
        _report(UsageError(message, f"see `{self.prog} --help`"))
        sys.exit(UsageError.exit_code)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="buildpy",
        description="Build Python source into a runnable container image with Podman (S2I).",
    )
    parser.add_argument("--version", action="version", version=f"buildpy {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument(
        "--log-format",
        choices=("auto", "console", "json"),
        default="auto",
        help="log format on stderr (auto: console on a terminal, else JSON)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    b = commands.add_parser("build", help="build SOURCE into an image")
    b.add_argument("source", type=Path, metavar="SOURCE", help="the application's directory")
    b.add_argument("-t", "--tag", help="name for the image (default: untagged; its ID is printed)")
    b.add_argument("--builder", help=f"S2I builder image (default: {DEFAULT_BUILDER})")
    b.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="variable for assemble and the image; beats --env-file and .s2i/environment",
    )
    b.add_argument(
        "--env-file",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="file of KEY=VALUE lines for assemble and the image (repeatable, later wins)",
    )
    b.add_argument(
        "--build-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="variable for assemble only; never stored in the image",
    )
    b.add_argument(
        "--ca-bundle",
        type=Path,
        metavar="FILE",
        help="CA bundle trusted during assemble only (mounted read-only, never in the image)",
    )
    b.add_argument(
        "--network", help="network for assemble: bridge, host, none, ... (Podman's default)"
    )
    b.add_argument(
        "--incremental",
        action="store_true",
        help="restore the previous image's save-artifacts output into /tmp/artifacts (S2I)",
    )
    b.add_argument(
        "--no-cache",
        action="store_true",
        help="no dependency layer reuse and no download cache for this build",
    )
    b.add_argument(
        "--timeout",
        type=duration,
        metavar="DURATION",
        help="stop the build after this long (e.g. 90s, 15m, 1h30m), like Ctrl-C; exit 124",
    )

    bb = commands.add_parser("builder", help="manage buildpy's own builder images")
    bsub = bb.add_subparsers(dest="builder_command", metavar="ACTION", required=True)
    bbuild = bsub.add_parser("build", help="build builder images (only when their inputs changed)")
    bbuild.add_argument("names", nargs="*", metavar="NAME", help="builders to build (default: all)")
    bbuild.add_argument("--base", help="base image to build on (default: the builder's own)")
    bbuild.add_argument("--force", action="store_true", help="rebuild even when up to date")
    bsub.add_parser("list", help="list the builder images buildpy can build")

    c = commands.add_parser("cache", help="list or remove what buildpy keeps between builds")
    csub = c.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    csub.add_parser("ls", help="list cached dependency images and download volumes")
    csub.add_parser("prune", help="remove all cached dependency images and download volumes")

    u = commands.add_parser("usage", help="show a builder image's usage text")
    u.add_argument("image", nargs="?", default=DEFAULT_BUILDER, metavar="IMAGE")

    d = commands.add_parser("doctor", help="check what a build needs here and how to fix it")
    d.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="output on stdout (default: text)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run one command and return its exit code."""
    args = _parser().parse_args(argv)
    json_logs = {"auto": None, "console": False, "json": True}[args.log_format]
    log.configure(-1 if args.quiet else args.verbose, json=json_logs)
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        return _exit_code(args, debug=args.verbose > 0)
    finally:
        signal.signal(signal.SIGTERM, previous)


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
            traceback.print_exc()
        error = BuildpyError(
            f"internal error: {type(exc).__name__}: {exc}",
            "run again with -v for a traceback, and report it",
        )
    _report(error)
    return error.exit_code


def _report(exc: BuildpyError) -> None:
    print(f"ERROR: {exc.message}", file=sys.stderr)
    if exc.hint:
        print(f"  hint: {exc.hint}", file=sys.stderr)


@contextmanager
def _engine() -> Iterator[PodmanEngine]:
    """The Podman engine for one command: a service found or started, closed afterwards."""
    with connect() as url, PodmanEngine(url) as engine:
        yield engine


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "build":
        return _build(args)
    if args.command == "builder":
        return _builder(args)
    if args.command == "cache":
        return _cache(args)
    if args.command == "doctor":
        return _doctor(args)
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
    with _deadline(args.timeout):
        return _build_in_time(args)


def _build_in_time(args: argparse.Namespace) -> int:
    explicit = frozenset(k for k in ("builder", "tag", "network") if getattr(args, k) is not None)
    options = with_pyproject(
        BuildOptions(
            source=args.source,
            builder=args.builder or DEFAULT_BUILDER,
            tag=args.tag,
            env_files=tuple(args.env_file),
            env=tuple(args.env),
            build_env=tuple(args.build_env),
            ca_bundle=args.ca_bundle,
            network=args.network,
            cache=not args.no_cache,
            incremental=args.incremental,
        ),
        explicit,
    )
    plan = build_plan.make(options)
    logger = log.get("buildpy")
    origins = environment.origins(plan.env_layers)
    logger.debug("image variables", origins={key: where for key, (_, where) in origins.items()})
    with _engine() as engine:
        result = build_stage.run(plan, engine)
    logger.info(
        "built",
        image=result.image_id[:12],
        tag=result.tag,
        seconds=round(result.seconds, 3),
        assemble_seconds=round(result.assemble_seconds, 3),
        phases=result.phases,
        dependencies_reused=result.dependencies_reused,
        **{f"{k}_seconds": round(v, 3) for k, v in result.times.items() if k != "assemble"},
    )
    print(result.tag or result.image_id)
    return 0


def _builder(args: argparse.Namespace) -> int:
    if args.builder_command == "list":
        for _name, builder in sorted(builders.BUILDERS.items()):
            print(f"{builder.tag}\t{builder.containerfile}\tbase={builder.base}")
        return 0
    chosen = [builders.lookup(n) for n in args.names] or list(builders.BUILDERS.values())
    with _engine() as engine:
        for builder in chosen:
            builders.ensure(engine, builder, base=args.base, force=args.force)
            print(builder.tag)
    return 0


def _usage(args: argparse.Namespace) -> int:
    with _engine() as engine:
        text = usage(engine, args.image)
    sys.stdout.write(text)
    return 0


def _cache(args: argparse.Namespace) -> int:
    with _engine() as engine:
        swept = leftovers.sweep(engine) if args.cache_command == "prune" else []
        if args.cache_command == "prune":
            removed, kept = cache.prune(engine)
            sections = [("removed", removed), ("in-use", kept)]
        else:
            sections = [("cached", cache.listing(engine))]
    for name in swept:
        print(f"removed\tcontainer\t{name}")
    for verb, found in sections:
        for item in found.images:
            tags = ",".join(item.tags) or item.id[:12]
            print(f"{verb}\timage\t{tags}\t{item.size / 1e6:.1f} MB\t{item.created}")
        for name, mountpoint in found.volumes:
            print(f"{verb}\tvolume\t{name}\t{mountpoint}")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from buildpy import doctor  # only this command needs it

    checks = doctor.diagnose(doctor.LocalHost())
    if args.format == "json":
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
