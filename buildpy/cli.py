"""The command line: parses arguments, prints results, picks exit codes. Nothing else does.

Results (an image ID or tag) go to stdout, one per line, so they can be
captured; logs, build output and errors go to stderr.
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import FrameType

from buildpy import __version__, builders, cache, environment, indexes, log, redact, wheelhouse
from buildpy import build as build_stage
from buildpy import plan as build_plan
from buildpy.config import BuildOptions, default_builder, with_pyproject
from buildpy.errors import BuildpyError, Interrupted
from buildpy.podman import PodmanEngine
from buildpy.service import connect
from buildpy.usage import usage


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    _add_build_inputs(b)
    b.add_argument(
        "--wheelhouse",
        type=Path,
        metavar="DIR",
        help="install from this directory (made by `buildpy wheelhouse`) with no index;"
        " mounted read-only during assemble, never in the image",
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

    w = commands.add_parser(
        "wheelhouse", help="collect what building SOURCE installs into DIR, for offline builds"
    )
    w.add_argument("source", type=Path, metavar="SOURCE", help="the application's directory")
    w.add_argument("dir", type=Path, metavar="DIR", help="the wheelhouse (made if missing)")
    _add_build_inputs(w)

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
    u.add_argument("image", nargs="?", default=None, metavar="IMAGE")
    return parser


def _add_build_inputs(p: argparse.ArgumentParser) -> None:
    """What decides a build's assemble: shared by `build` and `wheelhouse`."""
    p.add_argument("--builder", help=f"S2I builder image (default: {default_builder()})")
    p.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="variable for assemble and the image; beats --env-file and .s2i/environment",
    )
    p.add_argument(
        "--env-file",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="file of KEY=VALUE lines for assemble and the image (repeatable, later wins)",
    )
    p.add_argument(
        "--build-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="variable for assemble only; never stored in the image",
    )
    p.add_argument(
        "--ca-bundle",
        type=Path,
        metavar="FILE",
        help="CA bundle trusted during assemble only (mounted read-only, never in the image)",
    )
    p.add_argument(
        "--network", help="network for assemble: bridge, host, none, ... (Podman's default)"
    )
    _add_index_options(p)


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
        help="another index, with --index-url (repeatable)",
    )
    p.add_argument(
        "--trusted-host",
        action="append",
        default=[],
        metavar="HOST",
        help="an index host trusted without valid TLS, with --index-url (repeatable)",
    )


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
    print(f"ERROR: {redact.mask(exc.message)}", file=sys.stderr)
    if exc.hint:
        print(f"  hint: {redact.mask(exc.hint)}", file=sys.stderr)


@contextmanager
def _engine() -> Iterator[PodmanEngine]:
    """The Podman engine for one command: a service found or started, closed afterwards."""
    with connect() as url, PodmanEngine(url) as engine:
        yield engine


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "build":
        return _build(args)
    if args.command == "wheelhouse":
        return _wheelhouse(args)
    if args.command == "builder":
        return _builder(args)
    if args.command == "cache":
        return _cache(args)
    return _usage(args)


def _options(
    args: argparse.Namespace,
    *,
    tag: str | None = None,
    cache: bool = True,
    incremental: bool = False,
    wheelhouse: Path | None = None,
) -> BuildOptions:
    """The options of `build` or `wheelhouse`, over the source's [tool.buildpy]."""
    keys = ("builder", "tag", "network")
    explicit = frozenset(k for k in keys if getattr(args, k, None) is not None)
    return with_pyproject(
        BuildOptions(
            source=args.source,
            builder=args.builder or default_builder(),
            env_files=tuple(args.env_file),
            env=tuple(args.env),
            build_env=tuple(args.build_env),
            ca_bundle=args.ca_bundle,
            network=args.network,
            index_url=args.index_url,
            extra_index_urls=tuple(args.extra_index_url),
            trusted_hosts=tuple(args.trusted_host),
            tag=tag,
            cache=cache,
            incremental=incremental,
            wheelhouse=wheelhouse,
        ),
        explicit,
    )


def _build(args: argparse.Namespace) -> int:
    options = _options(
        args,
        tag=args.tag,
        cache=not args.no_cache,
        incremental=args.incremental,
        wheelhouse=args.wheelhouse,
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


def _wheelhouse(args: argparse.Namespace) -> int:
    options = _options(args, cache=False)
    if options.tag is not None:  # [tool.buildpy] may name one; a wheelhouse makes no image
        options = replace(options, tag=None)
    plan = build_plan.make(options)
    target = indexes.wheelhouse_to_fill(args.dir)
    with _engine() as engine:
        filled = wheelhouse.fill(plan, target, engine, sys.stderr.buffer)
    log.get("buildpy").info(
        "wheelhouse ready",
        path=str(filled.path),
        added=len(filled.added),
        total=filled.total,
        seconds=round(filled.seconds, 3),
    )
    print(filled.path)
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
        text = usage(engine, args.image or default_builder())
    sys.stdout.write(text)
    return 0


def _cache(args: argparse.Namespace) -> int:
    with _engine() as engine:
        if args.cache_command == "prune":
            removed, kept = cache.prune(engine)
            sections = [("removed", removed), ("in-use", kept)]
        else:
            sections = [("cached", cache.listing(engine))]
    for verb, found in sections:
        for item in found.images:
            tags = ",".join(item.tags) or item.id[:12]
            print(f"{verb}\timage\t{tags}\t{item.size / 1e6:.1f} MB\t{item.created}")
        for name, mountpoint in found.volumes:
            print(f"{verb}\tvolume\t{name}\t{mountpoint}")
    return 0
