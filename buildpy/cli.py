"""The command line: parses arguments, prints results, picks exit codes. Nothing else does.

Results (an image ID or tag) go to stdout, one per line, so they can be
captured; logs, build output and errors go to stderr.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from buildpy import __version__, builders, cache, cachedir, carry, environment, log
from buildpy import build as build_stage
from buildpy import plan as build_plan
from buildpy.config import DEFAULT_BUILDER, BuildOptions, with_pyproject
from buildpy.errors import BuilderImageError, BuildpyError, CacheDirError, Interrupted
from buildpy.podman import PodmanEngine
from buildpy.service import connect
from buildpy.session import require_builder
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
    _input_options(b)
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
        "--cache-from",
        type=Path,
        metavar="DIR",
        help="first import the cache in DIR (as `cache import`; a problem is only a warning)",
    )
    b.add_argument(
        "--cache-to",
        type=Path,
        metavar="DIR",
        help="then export the cache this source's next build can use to DIR (as `cache export`)",
    )

    bb = commands.add_parser("builder", help="manage buildpy's own builder images")
    bsub = bb.add_subparsers(dest="builder_command", metavar="ACTION", required=True)
    bbuild = bsub.add_parser("build", help="build builder images (only when their inputs changed)")
    bbuild.add_argument("names", nargs="*", metavar="NAME", help="builders to build (default: all)")
    bbuild.add_argument("--base", help="base image to build on (default: the builder's own)")
    bbuild.add_argument("--force", action="store_true", help="rebuild even when up to date")
    bsub.add_parser("list", help="list the builder images buildpy can build")

    c = commands.add_parser(
        "cache", help="list, remove, export or import what buildpy keeps between builds"
    )
    csub = c.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    csub.add_parser("ls", help="list cached dependency images and download volumes")
    csub.add_parser("prune", help="remove all cached dependency images and download volumes")
    ce = csub.add_parser(
        "export", help="replace DIR with the cache SOURCE's next build can use (for CI)"
    )
    ce.add_argument("directory", type=Path, metavar="DIR", help="the cache directory to write")
    ce.add_argument("source", type=Path, metavar="SOURCE", help="the application's directory")
    _input_options(ce)
    ci = csub.add_parser("import", help="load a cache directory that `cache export` wrote")
    ci.add_argument("directory", type=Path, metavar="DIR", help="missing or empty: nothing to do")

    u = commands.add_parser("usage", help="show a builder image's usage text")
    u.add_argument("image", nargs="?", default=DEFAULT_BUILDER, metavar="IMAGE")
    return parser


def _input_options(parser: argparse.ArgumentParser) -> None:
    """What decides a build's inputs: ``build`` takes them, and ``cache export`` the same,
    to find the dependency layer that build uses."""
    parser.add_argument("--builder", help=f"S2I builder image (default: {DEFAULT_BUILDER})")
    parser.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="variable for assemble and the image; beats --env-file and .s2i/environment",
    )
    parser.add_argument(
        "--env-file",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="file of KEY=VALUE lines for assemble and the image (repeatable, later wins)",
    )
    parser.add_argument(
        "--build-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="variable for assemble only; never stored in the image",
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
    return _usage(args)


def _options(args: argparse.Namespace) -> BuildOptions:
    """The build's options; ``cache export`` has only the inputs (see ``_input_options``)."""
    given = {k: getattr(args, k, None) for k in ("builder", "tag", "network")}
    return with_pyproject(
        BuildOptions(
            source=args.source,
            builder=args.builder or DEFAULT_BUILDER,
            tag=given["tag"],
            env_files=tuple(args.env_file),
            env=tuple(args.env),
            build_env=tuple(args.build_env),
            ca_bundle=getattr(args, "ca_bundle", None),
            network=given["network"],
            cache=not getattr(args, "no_cache", False),
            incremental=getattr(args, "incremental", False),
        ),
        frozenset(k for k, v in given.items() if v is not None),
    )


def _build(args: argparse.Namespace) -> int:
    plan = build_plan.make(_options(args))
    logger = log.get("buildpy")
    origins = environment.origins(plan.env_layers)
    logger.debug("image variables", origins={key: where for key, (_, where) in origins.items()})
    with _engine() as engine:
        if args.cache_from is not None:
            _import_for_build(engine, args.cache_from)
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
        print(result.tag or result.image_id, flush=True)
        if args.cache_to is not None:  # the image stays built and printed if this fails
            _export(engine, plan, args.cache_to)
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
    if args.cache_command == "export":
        return _cache_export(args)
    if args.cache_command == "import":
        return _cache_import(args)
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


def _cache_export(args: argparse.Namespace) -> int:
    plan = build_plan.make(_options(args))
    with _engine() as engine:
        exported = _export(engine, plan, args.directory)
    for image in exported.manifest.images:
        names = ",".join(image.names)
        print(f"exported\timage\t{names}\t{_mb(image.file.size)}\t{image.file.name}")
    downloads = exported.manifest.downloads
    if downloads is not None:
        wheels = f"{downloads.wheels} wheels"
        print(f"exported\tdownloads\t{wheels}\t{_mb(downloads.file.size)}\t{downloads.file.name}")
    return 0


def _export(engine: PodmanEngine, plan: build_plan.BuildPlan, directory: Path) -> carry.Exported:
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
    return 0


def _import(engine: PodmanEngine, directory: Path) -> carry.Imported:
    started = time.monotonic()
    imported = carry.import_cache(engine, directory)
    log.get("buildpy").info(
        "cache imported" if imported.manifest else "no cache to import",
        directory=str(directory),
        loaded=len(imported.loaded),
        present=len(imported.present),
        wheels=imported.wheels,
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
