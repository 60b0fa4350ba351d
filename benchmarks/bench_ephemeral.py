#!/usr/bin/env python3
"""Ephemeral-runner benchmark: a CI job on empty storage with buildpy's cache carried in.

    .venv/bin/python benchmarks/bench_ephemeral.py [--reps N] [--apps flask,django]
        [--builder REF] [--builder-archive FILE] [--json FILE]

For each example app and repetition, two fresh container storages (each its own
graphroot and runroot in a temporary directory, served by its own `podman system
service`, holding only the builder image, loaded from an archive) stand for the
machine that built before and for a new CI runner:

1. machine: a cold build, `buildpy cache export DIR SOURCE`, then a rebuild after a
   source-only change (the warm rebuild);
2. runner: `buildpy cache import DIR`, the same source-only rebuild (the ephemeral
   rebuild), its image asked for GET / on 127.0.0.1, and `cache export` into the same
   DIR again (what a CI job pays at its end when nothing changed).

It prints a markdown report and a JSON document; timings are printed, never asserted.
Every storage it made is removed at the end, also on Ctrl-C. It never touches the
machine's own storage except to `podman save` the builder once (kept under
~/.cache/buildpy/builders by the builder's ID), so it is safe on a shared host and
runs rootless as well (as the user running it). Standard library only; the helpers
come from bench_rebuild.py.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_rebuild as rebuild
from bench_rebuild import APPS, BUILDPY, App, Context, div, median, progress, stats

BUILDER = rebuild.BUILDER
ARCHIVES = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "buildpy" / "builders"
STEPS = ("cold", "export", "warm", "import", "ephemeral", "export_again")
# Issue 8's limits: the ephemeral source-only rebuild against the warm one and the cold build.
TARGETS = {"ephemeral_vs_warm": 1.3, "ephemeral_vs_cold": 0.3}
RATIOS = {
    "ephemeral_vs_warm": "ephemeral / warm",
    "ephemeral_vs_cold": "ephemeral / cold",
    "import_plus_ephemeral_vs_cold": "(import + ephemeral) / cold",
}


@dataclass(frozen=True)
class Storage:
    """A fresh storage with its own service: ``podman`` runs the CLI on it."""

    podman: tuple[str, ...]
    ctx: Context  # what bench_rebuild's buildpy_build needs: CONTAINER_HOST, builder ID


def podman_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "CONTAINER_HOST"}


def builder_archive(ref: str, given: Path | None) -> Path:
    """The builder as a `podman save` archive: ``given``, else one kept by its ID."""
    if given is not None:
        return given
    found = rebuild.image_id(ref, podman_env())
    stem = ref.rsplit("/", 1)[-1].replace(":", "_")
    path = ARCHIVES / f"{stem}@{found.split(':')[-1][:12]}.tar"
    if not path.is_file():
        progress(f"saving {ref} to {path} (once per builder ID)")
        ARCHIVES.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        rebuild.run(["podman", "save", "-q", "-o", str(partial), ref], env=podman_env())
        partial.rename(path)
    return path


@contextmanager
def fresh_storage(base: Path, name: str, archive: Path, index: str) -> Iterator[Storage]:
    """A new graphroot and runroot holding only the builder; all removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))  # Podman: runroot < 50 chars
    podman = ("podman", "--root", str(work / "root"), "--runroot", str(work / "run"))
    try:
        with rebuild.podman_service(work / "podman.sock", podman) as sock:
            rebuild.run([*podman, "load", "-q", "-i", str(archive)], env=podman_env())
            builder = rebuild.run([*podman, "images", "-q", "--no-trunc"], env=podman_env())
            ctx = Context(
                work=work,
                index=index,
                builder=builder.stdout.split()[0],
                buildpy_env={**podman_env(), "CONTAINER_HOST": f"unix://{sock}"},
                podman_env=podman_env(),
            )
            try:
                yield Storage(podman, ctx)
            finally:
                rebuild.run([*podman, "rm", "-af", "-t", "0"], env=podman_env(), check=False)
    finally:
        unmount_under(work)
        if os.getuid() != 0:  # rootless: its layers belong to the user's subordinate ids
            rebuild.run(["podman", "unshare", "rm", "-rf", str(work)], check=False)
        shutil.rmtree(work, ignore_errors=True)


def unmount_under(path: Path) -> None:
    """Storage drivers leave a bind mount of their own directory behind."""
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted((p for p in points if p.startswith(f"{path}/")), reverse=True):
        subprocess.run(["umount", point], capture_output=True, check=False)


def buildpy(storage: Storage, *args: str) -> rebuild.Run:
    """A `buildpy cache` command on this storage, with the inputs the builds use."""
    return rebuild.run([str(BUILDPY), "--log-format", "json", *args], env=storage.ctx.buildpy_env)


def inputs(storage: Storage) -> list[str]:
    """What decides the dependency key, as bench_rebuild.buildpy_build passes it."""
    ctx = storage.ctx
    return [
        "--builder",
        ctx.builder,
        "--build-env",
        "PIP_NO_INDEX=1",
        "--build-env",
        f"PIP_FIND_LINKS={ctx.index}",
    ]


# ----------------------------------------------------------------------------- one sequence


def sequence(base: Path, app: App, archive: Path, index: str, rep: int) -> dict[str, Any]:
    """One machine and one runner, both fresh: the steps of the module doc, timed."""
    src = base / f"{app.name}-{rep}"
    shutil.copytree(app.source, src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    cache = base / f"cache-{app.name}-{rep}"
    seconds: dict[str, float] = {}
    events: dict[str, dict[str, Any]] = {}
    with ExitStack() as stack:
        machine = stack.enter_context(fresh_storage(base, "machine", archive, index))
        runner = stack.enter_context(fresh_storage(base, "runner", archive, index))
        cold = rebuild.buildpy_build(machine.ctx, src, f"{rebuild.PREFIX}{app.name}-cold")
        seconds["cold"], events["cold"] = cold.seconds, cold.event
        seconds["export"] = buildpy(
            machine, "cache", "export", str(cache), str(src), *inputs(machine)
        ).seconds
        view = src / app.view
        view.write_text(app.edited(view.read_text(), rep))
        warm = rebuild.buildpy_build(machine.ctx, src, f"{rebuild.PREFIX}{app.name}-warm")
        seconds["warm"], events["warm"] = warm.seconds, warm.event
        seconds["import"] = buildpy(runner, "cache", "import", str(cache)).seconds
        ephemeral = rebuild.buildpy_build(runner.ctx, src, f"{rebuild.PREFIX}{app.name}-runner")
        seconds["ephemeral"], events["ephemeral"] = ephemeral.seconds, ephemeral.event
        again = buildpy(runner, "cache", "export", str(cache), str(src), *inputs(runner))
        seconds["export_again"] = again.seconds
        sizes = cache_sizes(cache, machine, cold.event)
        http = check_http(runner, ephemeral.image, app.answer(rep))
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    return {"seconds": seconds, "events": events, "sizes": sizes, "http": http, "kept": kept(again)}


def cache_sizes(cache: Path, machine: Storage, cold: dict[str, Any]) -> dict[str, int]:
    """Bytes of the exported files, and of the dependency image whole (a plain `podman
    save` of it would hold about that much)."""
    manifest = json.loads((cache / "buildpy-cache.json").read_text())
    images = sum(int(image["size"]) for image in manifest["images"])
    downloads = int((manifest.get("downloads") or {}).get("size") or 0)
    whole = 0
    if manifest["images"]:
        ref = manifest["images"][0]["id"]
        done = rebuild.run([*machine.podman, "image", "inspect", "--format", "{{.Size}}", ref])
        whole = int(done.stdout.strip())
    return {
        "images": images,
        "downloads": downloads,
        "total": images + downloads,
        "whole_image": whole,
    }


def kept(done: rebuild.Run) -> int | None:
    """How many archives the second export took over unchanged (from its log line)."""
    for line in done.stderr.splitlines():
        if '"cache exported"' in line:
            return int(json.loads(line).get("kept", 0))
    return None


def check_http(storage: Storage, image: str, body: str | None) -> str:
    """GET / from the image on 127.0.0.1 (bounded); a failure is a finding, not an error."""
    port = rebuild.free_port()
    name = f"buildpy-bench-{secrets.token_hex(4)}"
    started = rebuild.run(
        [*storage.podman, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", image],
        env=podman_env(),
        check=False,
    )
    if started.returncode != 0:
        return f"could not run: {started.stderr.strip().splitlines()[-1:]}"
    try:
        got = rebuild.poll(f"http://127.0.0.1:{port}/", rebuild.HTTP_DEADLINE)
    finally:
        rebuild.run([*storage.podman, "rm", "-f", "-t", "0", name], env=podman_env(), check=False)
    return rebuild.verdict(got, body)


# ----------------------------------------------------------------------------- summaries


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ci = [r["seconds"]["import"] + r["seconds"]["ephemeral"] for r in runs]
    steps = {step: stats([r["seconds"][step] for r in runs]) for step in STEPS}
    steps["import + ephemeral"] = stats(ci)
    return {
        "steps": steps,
        "ratios": {
            "ephemeral_vs_warm": div(median(steps["ephemeral"]), median(steps["warm"])),
            "ephemeral_vs_cold": div(median(steps["ephemeral"]), median(steps["cold"])),
            "import_plus_ephemeral_vs_cold": div(statistics.median(ci), median(steps["cold"])),
        },
        "sizes": runs[-1]["sizes"],
        "dependencies_reused": {
            step: [r["events"][step].get("dependencies_reused") for r in runs]
            for step in ("cold", "warm", "ephemeral")
        },
        "phases": {
            step: phases([r["events"][step] for r in runs]) for step in ("warm", "ephemeral")
        },
        "kept_by_second_export": [r["kept"] for r in runs],
        "http": sorted({r["http"] for r in runs}),
    }


def phases(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the ``*_seconds`` in buildpy's ``built`` lines: where a build's time went."""
    keys = sorted({k for e in events for k in e if k.endswith("seconds")})
    return {k: stats([float(e[k]) for e in events if k in e]) for k in keys}


def verdict(value: float | None, limit: float) -> str:
    if value is None:
        return "n/a"
    return "PASS" if value <= limit else f"MISS by {value / limit - 1:.0%}"


def targets(apps: dict[str, Any]) -> list[dict[str, Any]]:
    words = {"ephemeral_vs_warm": "warm-machine rebuild", "ephemeral_vs_cold": "cold build"}
    return [
        {
            "target": f"{name}: ephemeral source-only rebuild / {words[key]}",
            "value": app["ratios"][key],
            "limit": limit,
            "verdict": verdict(app["ratios"][key], limit),
        }
        for name, app in apps.items()
        for key, limit in TARGETS.items()
    ]


def fmt(summary: dict[str, Any] | None) -> str:
    return "-" if summary is None else f"{summary['min']:.2f} / {summary['median']:.2f}"


def mb(size: int) -> str:
    return f"{size / 1e6:.1f}"


def table(header: str, rows: list[str]) -> list[str]:
    """A markdown table: the header's cells, a rule, the rows; a blank line before."""
    return ["", f"| {header} |", "|" + "---|" * (header.count("|") + 1), *rows]


def markdown(report: dict[str, Any]) -> str:
    apps = report["apps"].items()
    steps = [
        f"| {name} | {step} | {fmt(summary)} |"
        for name, app in apps
        for step, summary in app["steps"].items()
    ]
    ratios = [
        f"| {name} | " + " | ".join(f"{app['ratios'][key]}x" for key in RATIOS) + " |"
        for name, app in apps
    ]
    sizes = [
        f"| {name} | {mb(s['total'])} ({mb(s['images'])} + {mb(s['downloads'])}) "
        f"| {mb(s['whole_image'])} |"
        for name, s in ((name, app["sizes"]) for name, app in apps)
    ]
    verdicts = [
        f"| {row['target']} | {row['value']}x | {row['limit']}x | {row['verdict']} |"
        for row in report["targets"]
    ]
    took = report["runtime_seconds"]
    return "\n".join(
        [
            f"{report['machine']}; {report['reps']} repetitions; run took {took} s.",
            *table("app | step | seconds (min / median)", steps),
            *table("app | " + " | ".join(RATIOS.values()), ratios),
            *table("app | exported MB (images + wheels) | whole dependency image MB", sizes),
            *table("target | measured | limit | verdict", verdicts),
        ]
    )


# ----------------------------------------------------------------------------- main


def machine_line(builder: str) -> str:
    version = rebuild.run(["podman", "--version"], env=podman_env()).stdout.strip()
    user = "root" if os.getuid() == 0 else f"rootless (uid {os.getuid()})"
    commit = rebuild.run(
        ["git", "-C", str(rebuild.ROOT), "rev-parse", "--short", "HEAD"], check=False
    )
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs, {version}, {user}, builder {builder}, buildpy "
        f"{commit.stdout.strip() or '?'}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())},"
        f" load average at the end {load}"
    )


def measure(args: argparse.Namespace) -> dict[str, Any]:
    note = rebuild.compile_buildpy()
    archive = builder_archive(args.builder, args.builder_archive)
    with (
        tempfile.TemporaryDirectory(prefix="bpe-", dir=args.workdir) as tmp,
        rebuild.wheelhouse_server() as index,
    ):
        apps = {}
        for name in args.apps:
            runs = []
            for rep in range(args.reps):
                progress(f"{name}: repetition {rep + 1}/{args.reps}")
                runs.append(sequence(Path(tmp), APPS[name], archive, index, rep))
            apps[name] = summarize(runs)
    return {
        "machine": machine_line(args.builder),
        "reps": args.reps,
        "apps": apps,
        "targets": targets(apps),
        "notes": [note],
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions per app (default 3)")
    parser.add_argument("--apps", default="flask,django", help="comma-separated: flask,django")
    parser.add_argument("--builder", default=BUILDER, help=f"builder image (default {BUILDER})")
    parser.add_argument(
        "--builder-archive",
        type=Path,
        help="`podman save` archive of the builder (default: saved from this user's storage)",
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path("/var/tmp"), help="where the storages go"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the JSON here")
    args = parser.parse_args(argv)
    args.apps = [a for a in args.apps.split(",") if a]
    if [a for a in args.apps if a not in APPS] or args.reps < 1:
        parser.error("unknown app, or --reps below 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    return rebuild.finish(lambda: measure(args), markdown, args.json)


if __name__ == "__main__":
    sys.exit(main())
