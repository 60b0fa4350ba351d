#!/usr/bin/env python3
"""Rebuild benchmark: buildpy against `podman build` of a dependency-first Containerfile.

    .venv/bin/python benchmarks/bench_rebuild.py [--reps N] [--apps flask,django]
        [--app DIR[:VIEW]] [--upload-mib 256,512,1024] [--foreign-apps flask,django]
        [--shared-host] [--json FILE]

In one run, on this machine, from one package source (the test wheelhouse served on 127.0.0.1):
for each example app, a cold build, a rebuild after a source-only change and a rebuild after
adding one dependency, by buildpy and by the baseline (benchmarks/baseline/Containerfile);
image sizes; buildpy's own overhead; buildpy's peak RSS and time while uploading large source
trees, next to `podman cp` of the same trees; and on a foreign builder (the same builder with
buildpy's labels blanked, so its own scripts run as any S2I tool runs them), a source-only
rebuild against its cold build. Prints a markdown report and a JSON document. Timings are
printed, never asserted.
Images live under localhost/buildpy-bench/ and are removed at the end, also on Ctrl-C.
Standard library only.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
BUILDPY = ROOT / ".venv" / "bin" / "buildpy"
# Where scripts/make-wheelhouse keeps it (as the integration tests find it).
WHEELHOUSE = Path(
    os.environ.get("BUILDPY_WHEELHOUSE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "buildpy" / "wheelhouse"
)
CONTAINERFILE = ROOT / "benchmarks" / "baseline" / "Containerfile"
BUILDER = "localhost/buildpy/python-311"
PREFIX = "localhost/buildpy-bench/"
DEPENDENCY_REPOSITORY = "localhost/buildpy-cache/dependencies"  # buildpy's dependency images
NEW_DEPENDENCY = "six"
NEEDED_WHEELS = ("flask", "django", "gunicorn", NEW_DEPENDENCY)
STEPS = ("cold", "source", "dependency")
SIDES = ("buildpy", "baseline")
UPLOAD_MIB = (256, 512, 1024)
SMALL_FILES_PER_GIB = 10_000
SMALL_FILE_BYTES = 4096
HTTP_DEADLINE = 45.0
MIB = 1024 * 1024

# Limits: (limit, unit). Ratios are medians over medians. Issue 13's where it set one (cold
# builds, source-only rebuilds against the baseline, overhead, start-up), else issue 4's.
TARGETS = {
    "source_vs_baseline": (0.5, "x"),
    "source_vs_full": (0.15, "x"),
    "cold_vs_baseline": (0.9, "x"),
    "dependency_vs_cold": (0.5, "x"),
    "overhead": (0.2, "s"),
    "version": (0.1, "s"),
    "peak_rss_1gib": (80.0, "MiB"),
    "upload_vs_podman_cp": (1.0, "x"),
    "foreign_source_vs_cold": (0.3, "x"),
}
STARTUP_REPS = 10
# A builder without buildpy's labels: the same image and scripts, as a foreign S2I builder.
FOREIGN_CONTAINERFILE = (
    'FROM {builder}\nLABEL io.buildpy.assemble-phases="" io.buildpy.builder.digest=""\n'
)


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


@dataclass(frozen=True)
class App:
    name: str
    source: Path
    view: str  # the file the source-only change edits
    body: str | None  # what GET / answers; None (an app given with --app): any 200
    wheels: Path | None = None  # its own package source (--app), served with the wheelhouse

    def edited(self, text: str, rep: int) -> str:
        """The view after the source-only change: the example apps' answer changes; a
        given app's view gets a comment line (a change to the source, not to what it says)."""
        if self.body is None:
            return f"{text.rstrip()}\n# bench_rebuild.py: edit {rep}\n"
        return text.replace("buildpy!", f"buildpy (edit {rep})!", 1)

    def answer(self, rep: int | None = None) -> str | None:
        """What GET / should answer (after edit ``rep``); None when only the status counts."""
        if self.body is None or rep is None:
            return self.body
        return self.edited(self.body, rep)


APPS = {
    "flask": App("flask", ROOT / "examples" / "hello-flask", "wsgi.py", "Hello from buildpy!\n"),
    "django": App(
        "django",
        ROOT / "examples" / "hello-django",
        "greeting/views.py",
        "Hello from Django on buildpy!\n",
    ),
}


@dataclass(frozen=True)
class Run:
    returncode: int
    seconds: float
    max_rss_kib: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Build:
    seconds: float
    image: str
    event: dict[str, Any]  # buildpy's result (build --format json); empty for podman build
    max_rss_kib: int


@dataclass
class Context:
    work: Path
    index: str  # the wheelhouse, as a find-links URL on 127.0.0.1
    builder: str  # the builder's image ID, pinned for the whole run
    buildpy_env: dict[str, str]  # CONTAINER_HOST: one service for every build
    # No CONTAINER_HOST (it would make the podman CLI remote); TMPDIR holds its cache mounts.
    podman_env: dict[str, str]
    shared_host: bool = False  # never `buildpy cache prune`: it clears everyone's cache
    notes: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    spent: dict[str, float] = field(default_factory=dict)  # housekeeping seconds, by kind


@contextmanager
def timed(ctx: Context, kind: str) -> Iterator[None]:
    """Count time spent outside the measured builds, so a slow run can be explained."""
    started = time.monotonic()
    try:
        yield
    finally:
        ctx.spent[kind] = round(ctx.spent.get(kind, 0.0) + time.monotonic() - started, 2)


# ----------------------------------------------------------------------------- processes


def run(cmd: list[str], env: dict[str, str] | None = None, check: bool = True) -> Run:
    """Run a command to completion; wall time and the peak RSS of it and its waited children."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            _reap(proc)
            raise
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        done = Run(proc.returncode, seconds, usage.ru_maxrss, _text(out.read()), _text(err.read()))
    if check and done.returncode != 0:
        raise BenchError(
            f"`{' '.join(cmd[:4])} ...` exited with {done.returncode}:\n{done.stderr[-3000:]}"
        )
    return done


def _text(data: bytes) -> str:
    return data.decode(errors="replace")


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """After Ctrl-C: let the child clean up (buildpy removes its container), then make sure."""
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def podman(ctx: Context, *args: str, check: bool = True) -> Run:
    return run(["podman", *args], env=ctx.podman_env, check=check)


# ----------------------------------------------------------------------------- session


@contextmanager
def session(apps: Sequence[App] = ()) -> Iterator[Context]:
    """Temp dir, one Podman service, the wheelhouse on 127.0.0.1 (with the package
    sources of ``apps`` given with --app); all gone at the end."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        sock = stack.enter_context(podman_service(work / "podman.sock"))
        extra = [app.wheels for app in apps if app.wheels is not None]
        served = merged_index(work / "index", [WHEELHOUSE, *extra]) if extra else WHEELHOUSE
        index = stack.enter_context(wheelhouse_server(served))
        (work / "tmp").mkdir()
        base = {k: v for k, v in os.environ.items() if k != "CONTAINER_HOST"}
        ctx = Context(
            work=work,
            index=index,
            builder=image_id(BUILDER, base),
            buildpy_env={**base, "CONTAINER_HOST": f"unix://{sock}"},
            podman_env={**base, "TMPDIR": str(work / "tmp")},
        )
        stack.callback(cleanup, ctx)
        yield ctx


@contextmanager
def podman_service(sock: Path, podman: Sequence[str] = ("podman",)) -> Iterator[Path]:
    """``podman system service`` on ``sock``; ``podman`` may carry global options
    (``--root``, ``--runroot``: another storage, as bench_ephemeral.py uses)."""
    log_path = sock.with_suffix(".log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*podman, "system", "service", "--time=0", f"unix://{sock}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,  # Ctrl-C reaches buildpy first; the service stops last
        )
    try:
        deadline = time.monotonic() + 30
        while not _pings(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"podman system service did not start: {log_path.read_text()}")
            time.sleep(0.05)
        yield sock
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _pings(sock: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(2)
            conn.connect(str(sock))
            conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: podman\r\n\r\n")
            return b" 200 " in conn.recv(64)[:16]
    except OSError:
        return False


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def wheelhouse_server(directory: Path = WHEELHOUSE) -> Iterator[str]:
    """The wheelhouse as a find-links page on 127.0.0.1 (plain files: no caching headers)."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def ensure_wheelhouse() -> None:
    def missing() -> list[str]:
        return [n for n in NEEDED_WHEELS if not any(WHEELHOUSE.glob(f"{n}-*.whl"))]

    if missing():
        progress(f"wheelhouse lacks {missing()}: running scripts/make-wheelhouse")
        run([str(ROOT / "scripts" / "make-wheelhouse")])
    if missing():
        raise BenchError(f"{WHEELHOUSE} still lacks {missing()}: add them to tests/wheelhouse.txt")


def merged_index(directory: Path, sources: Sequence[Path]) -> Path:
    """One directory of links to the package files of ``sources`` (the first source
    that has a file name wins), for one find-links page."""
    directory.mkdir()
    for source in sources:
        for file in sorted(source.iterdir()):
            link = directory / file.name
            if file.is_file() and not file.name.startswith(".") and not link.exists():
                link.symlink_to(file)
    return directory


# ----------------------------------------------------------------------------- given apps

APP_VIEWS = ("wsgi.py", "app.py", "application.py", "manage.py")
# Where given apps' package sources are kept between runs (collected once per requirements).
APP_WHEELS = WHEELHOUSE.parent / "bench-apps"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def given_app(text: str) -> App:
    """``--app DIR[:VIEW]``: an application of one's own, measured as the examples are.

    It needs requirements.txt (the baseline installs from it first, and the dependency
    step adds a line to it); VIEW is the file the source-only step changes (default: the
    first of APP_VIEWS there, else its first .py file). Its packages are collected once
    from the index (``buildpy wheelhouse``) and served on 127.0.0.1 with the wheelhouse,
    so both sides install from the same local source. GET / must answer 200.
    """
    where, _, view = text.partition(":")
    source = Path(where).expanduser().resolve()
    if not (source / "requirements.txt").is_file():
        raise argparse.ArgumentTypeError(f"{source} has no requirements.txt")
    if not view:
        found = [name for name in APP_VIEWS if (source / name).is_file()]
        found += sorted(p.name for p in source.glob("*.py"))
        if not found:
            raise argparse.ArgumentTypeError(f"{source} has no .py file to change: give DIR:VIEW")
        view = found[0]
    elif not (source / view).is_file():
        raise argparse.ArgumentTypeError(f"{source / view} is not a file")
    return App(source.name, source, view, None)


def collect_wheels(app: App) -> App:
    """The app with its package source: ``buildpy wheelhouse`` of it from the index, once
    per requirements.txt (kept under APP_WHEELS), with the host's CA bundle when there is
    one (TLS-intercepting proxies)."""
    digest = hashlib.sha256((app.source / "requirements.txt").read_bytes()).hexdigest()[:16]
    wheels = APP_WHEELS / f"{app.name}-{digest}"
    stamp = wheels / ".collected"
    if not stamp.exists():
        progress(f"{app.name}: collecting its packages into {wheels} (once)")
        command = [str(BUILDPY), "wheelhouse", "-q", str(app.source), str(wheels)]
        command += ["--network", "host"]
        if HOST_CA_BUNDLE.is_file():
            command += ["--ca-bundle", str(HOST_CA_BUNDLE)]
        done = run(command, check=False)
        if done.returncode != 0:
            raise BenchError(f"could not collect {app.name}'s packages: {done.stderr[-2000:]}")
        stamp.touch()
    return App(app.name, app.source, app.view, app.body, wheels)


def image_id(ref: str, env: dict[str, str]) -> str:
    done = run(["podman", "image", "inspect", "--format", "{{.Id}}", ref], env=env, check=False)
    if done.returncode != 0:
        raise BenchError(f"{ref} is not in local storage: build it (`make setup`)")
    return done.stdout.strip()


def cleanup(ctx: Context) -> None:
    """Remove every image and container this run made (tags it made, names it gave)."""
    remove_images(ctx, ctx.tags)
    names = podman(ctx, "ps", "-a", "--format", "{{.Names}}", check=False).stdout.split()
    for name in (n for n in names if n.startswith("buildpy-bench-")):
        podman(ctx, "rm", "-f", "-t", "0", name, check=False)
    listed = podman(ctx, "images", "--format", "{{.Repository}}:{{.Tag}}", check=False)
    remove_images(ctx, [ref for ref in listed.stdout.split() if ref.startswith(PREFIX)])


def remove_images(ctx: Context, tags: list[str]) -> None:
    """Untag and delete; podman also deletes the baseline's now-unused intermediate layers."""
    if tags:
        podman(ctx, "rmi", "-f", *tags, check=False)
    for tag in list(tags):
        if tag in ctx.tags:
            ctx.tags.remove(tag)


# ----------------------------------------------------------------------------- the two sides


def buildpy_build(
    ctx: Context, src: Path, tag: str, cold: bool = False, builder: str | None = None
) -> Build:
    ctx.tags.append(tag)
    global_options, build_options = result_options()
    done = run(
        [
            str(BUILDPY),
            *global_options,
            "build",
            *build_options,
            str(src),
            "--tag",
            tag,
            "--builder",
            builder or ctx.builder,
            "--network",
            "host",
            "--build-env",
            "PIP_NO_INDEX=1",
            "--build-env",
            f"PIP_FIND_LINKS={ctx.index}",
        ],
        env=ctx.buildpy_env,
    )
    return Build(done.seconds, tag, built_result(done.stdout, done.stderr), done.max_rss_kib)


def baseline_build(ctx: Context, src: Path, tag: str, cold: bool = False) -> Build:
    ctx.tags.append(tag)
    done = podman(
        ctx,
        "build",
        "-q",
        "-f",
        str(CONTAINERFILE),
        "-t",
        tag,
        "--network",
        "host",
        *(["--no-cache"] if cold else []),
        "--build-arg",
        f"BUILDER={ctx.builder}",
        "--build-arg",
        "PIP_NO_INDEX=1",
        "--build-arg",
        f"PIP_FIND_LINKS={ctx.index}",
        str(src),
    )
    return Build(done.seconds, tag, {}, done.max_rss_kib)


def buildpy_prune(ctx: Context) -> None:
    if ctx.shared_host:
        return  # this run's own dependency images are removed after each sequence
    with timed(ctx, "buildpy cache prune"):
        done = run([str(BUILDPY), "cache", "prune"], env=ctx.buildpy_env, check=False)
    note = "cache prune unavailable: buildpy cold builds ran with whatever caches existed"
    if done.returncode != 0 and note not in ctx.notes:
        ctx.notes.append(f"{note} ({done.stderr.strip().splitlines()[-1:]})")


def baseline_prune(ctx: Context) -> None:
    """podman build's cache mounts live under $TMPDIR/buildah-cache; --no-cache does the rest."""
    shutil.rmtree(Path(ctx.podman_env["TMPDIR"]) / "buildah-cache", ignore_errors=True)


BUILDS: dict[str, Callable[..., Build]] = {"buildpy": buildpy_build, "baseline": baseline_build}
PRUNES: dict[str, Callable[[Context], None]] = {
    "buildpy": buildpy_prune,
    "baseline": baseline_prune,
}


@functools.cache
def result_options() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """How buildpy is asked for its result's figures (options before and after ``build``):
    ``build --format json`` prints them on stdout, the log staying as users get it by
    default; a buildpy from before that option gives them only as its JSON log's ``built``
    event (``--log-format json``, which also imports structlog)."""
    done = run([str(BUILDPY), "build", "--help"])
    if "--format" in done.stdout:
        return (), ("--format", "json")
    return ("--log-format", "json"), ()


def built_result(stdout: str, stderr: str) -> dict[str, Any]:
    """The JSON object `build --format json` printed, else the ``built`` log event."""
    try:
        found = json.loads(stdout)
    except ValueError:
        found = None
    return dict(found) if isinstance(found, dict) else built_event(stderr)


def built_event(stderr: str) -> dict[str, Any]:
    """The last JSON log line with "event": "built" (build output may interleave)."""
    for line in reversed(stderr.splitlines()):
        if line.startswith("{") and '"built"' in line:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "built":
                return dict(event)
    return {}


# ----------------------------------------------------------------------------- app sequences


def sequence(ctx: Context, app: App, side: str, rep: int) -> dict[str, Build]:
    """Cold build, then a source-only change, then one more dependency, in a fresh copy."""
    src = ctx.work / f"{app.name}-{side}-{rep}"
    shutil.copytree(app.source, src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    build = BUILDS[side]
    tag = f"{PREFIX}{app.name}-{side}-{rep}"
    PRUNES[side](ctx)
    builds = {"cold": build(ctx, src, f"{tag}-cold", cold=True)}
    view = src / app.view
    view.write_text(app.edited(view.read_text(), rep))
    builds["source"] = build(ctx, src, f"{tag}-source")
    with open(src / "requirements.txt", "a") as reqs:
        reqs.write(f"\n{NEW_DEPENDENCY}\n")
    builds["dependency"] = build(ctx, src, f"{tag}-dependency")
    shutil.rmtree(src)
    return builds


def check_http(ctx: Context, image: str, body: str | None) -> str:
    """Run the image with its port on 127.0.0.1 and ask GET / once it answers (bounded);
    ``body`` None: any 200 answer is right."""
    port = free_port()
    name = f"buildpy-bench-{secrets.token_hex(4)}"
    podman(ctx, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", image)
    try:
        got = poll(f"http://127.0.0.1:{port}/", HTTP_DEADLINE)
    finally:
        podman(ctx, "rm", "-f", "-t", "0", name, check=False)
    return verdict(got, body)


def verdict(got: str, body: str | None) -> str:
    """``poll``'s answer against the expected body (None: any 200 answer)."""
    if body is None:
        return "ok (200; body not checked)" if got.startswith("200 ") else f"unexpected: {got!r}"
    return "ok" if got == f"200 {body}" else f"unexpected: {got!r}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def poll(url: str, deadline: float) -> str:
    end = time.monotonic() + deadline
    last = "no answer"
    for _ in range(int(deadline / 0.25)):
        if time.monotonic() > end:
            break
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return f"{reply.status} {reply.read().decode(errors='replace')}"
        except urllib.error.HTTPError as exc:
            return f"{exc.code} {exc.read()[:200].decode(errors='replace')}"
        except (OSError, ValueError) as exc:
            last = f"no answer ({exc})"
        time.sleep(0.25)
    return last


def image_size(ctx: Context, ref: str) -> int:
    return int(podman(ctx, "image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())


# ----------------------------------------------------------------------------- measuring


@dataclass
class AppResult:
    """Samples for one app: seconds[side][step], sizes[side], buildpy's events and RSS."""

    seconds: dict[str, dict[str, list[float]]]
    sizes: dict[str, list[int]]
    events: dict[str, list[dict[str, Any]]]
    walls: dict[str, list[float]]  # buildpy's wall time per step, to pair with events
    rss_kib: list[int] = field(default_factory=list)
    http: dict[str, str] = field(default_factory=dict)


def measure_app(ctx: Context, app: App, reps: int) -> AppResult:
    result = AppResult(
        seconds={s: {step: [] for step in STEPS} for s in SIDES},
        sizes={s: [] for s in SIDES},
        events={step: [] for step in STEPS},
        walls={step: [] for step in STEPS},
    )
    for rep in range(reps):
        order = SIDES if rep % 2 == 0 else SIDES[::-1]  # neither side always goes first
        for side in order:
            progress(f"{app.name}: {side}, repetition {rep + 1}/{reps}")
            builds = sequence(ctx, app, side, rep)
            record(ctx, result, app, side, builds)
            with timed(ctx, "removing images"):
                tags = [b.image for b in builds.values()]
                remove_images(ctx, tags + dependency_images(ctx, tags))
    return result


def dependency_images(ctx: Context, tags: list[str]) -> list[str]:
    """The dependency images buildpy made for these images: their parents, where those are
    dependency images (an application image keeps no key label with content)."""
    done = podman(ctx, "image", "inspect", "--format", "{{.Parent}}", *tags, check=False)
    parents = set(done.stdout.split())
    listed = podman(ctx, "images", "--no-trunc", "-q", DEPENDENCY_REPOSITORY, check=False)
    ours = {line.strip().removeprefix("sha256:") for line in listed.stdout.split()}
    return sorted(parents & ours)


def record(ctx: Context, result: AppResult, app: App, side: str, builds: dict[str, Build]) -> None:
    for step, build in builds.items():
        result.seconds[side][step].append(build.seconds)
        if side == "buildpy":
            result.events[step].append(build.event)
            result.walls[step].append(build.seconds)
            result.rss_kib.append(build.max_rss_kib)
    result.sizes[side].append(image_size(ctx, builds["cold"].image))
    if side not in result.http:
        with timed(ctx, "HTTP checks"):
            result.http[side] = check_http(ctx, builds["cold"].image, app.answer())


def make_tree(root: Path, mib: int) -> None:
    """A source tree of ``mib`` MiB: ~10k small files per GiB, the rest in four large files."""
    block = os.urandom(MIB)
    small = SMALL_FILES_PER_GIB * mib // 1024
    for i in range(small):
        folder = root / "small" / f"d{i // 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        offset = (i * SMALL_FILE_BYTES) % (MIB - SMALL_FILE_BYTES)
        (folder / f"f{i:05d}.txt").write_bytes(block[offset : offset + SMALL_FILE_BYTES])
    remaining = mib * MIB - small * SMALL_FILE_BYTES
    for i in range(4):
        with open(root / f"large-{i}.bin", "wb") as large:
            for _ in range(remaining // 4 // MIB):
                large.write(block)
    # Only the upload is measured: assemble drops the source, so the commit stays thin.
    scripts = root / ".s2i" / "bin"
    scripts.mkdir(parents=True)
    (scripts / "assemble").write_text("#!/bin/sh\nrm -rf /tmp/src\n")
    (scripts / "assemble").chmod(0o755)


def podman_cp(ctx: Context, tree: Path) -> float:
    """Seconds of `podman cp TREE/. CONTAINER:/tmp/src` into a created (not started)
    container of the builder: the same tree to the same place, by Podman's own CLI."""
    name = f"buildpy-bench-cp-{secrets.token_hex(4)}"
    podman(ctx, "create", "--name", name, ctx.builder, "true")
    try:
        return podman(ctx, "cp", f"{tree}/.", f"{name}:/tmp/src").seconds
    finally:
        podman(ctx, "rm", "-f", "-t", "0", name, check=False)


def measure_upload(ctx: Context, sizes_mib: list[int], reps: int) -> list[dict[str, Any]]:
    """Per size: ``reps`` pairs of a buildpy build and a ``podman cp`` of the same tree, which
    of the two goes first alternating (the second finds the tree in the page cache); medians."""
    rows = []
    for mib in sizes_mib:
        tree = ctx.work / f"upload-{mib}"
        uploads: list[float] = []
        cps: list[float] = []
        walls: list[float] = []
        rss: list[int] = []
        event: dict[str, Any] = {}
        try:
            with timed(ctx, "making upload trees"):
                make_tree(tree, mib)
            for rep in range(reps):
                progress(f"upload: {mib} MiB source tree, repetition {rep + 1}/{reps}")
                tag = f"{PREFIX}upload-{mib}"
                if (mib + rep) % 2:
                    cps.append(podman_cp(ctx, tree))
                    build = buildpy_build(ctx, tree, tag)
                else:
                    build = buildpy_build(ctx, tree, tag)
                    cps.append(podman_cp(ctx, tree))
                remove_images(ctx, [tag])
                costs = overhead(build.event, build.seconds)
                upload = costs.get("phases", {}).get("upload", costs.get("in_process"))
                if upload is not None:
                    uploads.append(upload)
                walls.append(build.seconds)
                rss.append(build.max_rss_kib)
                event = build.event
        finally:
            shutil.rmtree(tree, ignore_errors=True)
        upload_median = round(statistics.median(uploads), 3) if uploads else None
        cp_median = round(statistics.median(cps), 3) if cps else None
        rows.append(
            {
                "mib": mib,
                "samples": len(walls),
                "wall_seconds": round(statistics.median(walls), 3) if walls else None,
                "upload_seconds": upload_median,
                "upload_samples": [round(u, 3) for u in uploads],
                "podman_cp_seconds": cp_median,
                "podman_cp_samples": [round(c, 3) for c in cps],
                "upload_vs_podman_cp": div(upload_median, cp_median),
                "peak_rss_mib": round(max(rss, default=0) / 1024, 1),
                "event": event,
            }
        )
    return rows


# ----------------------------------------------------------------------------- foreign builder


def foreign_builder(ctx: Context) -> str:
    """The builder with buildpy's labels blanked: buildpy treats it as any S2I builder."""
    context = ctx.work / "foreign-builder"
    context.mkdir(exist_ok=True)
    (context / "Containerfile").write_text(FOREIGN_CONTAINERFILE.format(builder=ctx.builder))
    tag = f"{PREFIX}foreign-builder"
    ctx.tags.append(tag)
    podman(ctx, "build", "-q", "-t", tag, str(context))
    return image_id(tag, ctx.podman_env)


def measure_foreign(ctx: Context, apps: list[App], reps: int) -> dict[str, Any]:
    """Per app: cold build and source-only rebuild on the foreign builder, and their ratio."""
    if not apps:
        return {}
    builder = foreign_builder(ctx)
    found: dict[str, Any] = {}
    for app in apps:
        name = app.name
        seconds: dict[str, list[float]] = {"cold": [], "source": []}
        events: dict[str, list[dict[str, Any]]] = {"cold": [], "source": []}
        http = ""
        for rep in range(reps):
            progress(f"{name}: foreign builder, repetition {rep + 1}/{reps}")
            src = ctx.work / f"{name}-foreign-{rep}"
            shutil.copytree(app.source, src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            tag = f"{PREFIX}{name}-foreign-{rep}"
            builds = {"cold": buildpy_build(ctx, src, f"{tag}-cold", True, builder)}
            view = src / app.view
            view.write_text(app.edited(view.read_text(), rep))
            builds["source"] = buildpy_build(ctx, src, f"{tag}-source", builder=builder)
            shutil.rmtree(src)
            for step, build in builds.items():
                seconds[step].append(build.seconds)
                events[step].append(build.event)
            if not http:
                with timed(ctx, "HTTP checks"):
                    http = check_http(ctx, builds["source"].image, app.answer(rep))
            with timed(ctx, "removing images"):
                tags = [b.image for b in builds.values()]
                remove_images(ctx, tags + dependency_images(ctx, tags))
        cold, source = stats(seconds["cold"]), stats(seconds["source"])
        found[name] = {
            "cold": cold,
            "source": source,
            "ratio": div(median(source), median(cold)),
            "dependencies_reused": {
                k: [e.get("dependencies_reused") for e in v] for k, v in events.items()
            },
            "phases_run": {k: [e.get("phases") for e in v] for k, v in events.items()},
            "logged": {step: _logged(events[step]) for step in events},
            "http": http,
        }
    return found


def _logged(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Stats of each *_seconds key the built events have."""
    keys = sorted({k for e in events for k in e if k.endswith("_seconds")})
    return {
        k: stats([float(e[k]) for e in events if isinstance(e.get(k), (int, float))]) for k in keys
    }


# ----------------------------------------------------------------------------- summaries

# Logged phases that are work in the container or the engine, not buildpy's own: assemble,
# commits, and the dependency phase (its own install and commit).
ENGINE_PHASES = ("assemble", "commit", "dependencies", "install")


def overhead(event: dict[str, Any], wall: float) -> dict[str, Any]:
    """buildpy's own time: wall time minus its result's time inside assemble and commits."""
    if not isinstance(event.get("seconds"), (int, float)):
        return {}
    phases = {
        key[: -len("_seconds")]: float(value)
        for key, value in event.items()
        if key.endswith("_seconds") and isinstance(value, (int, float))
    }
    inside = sum(v for k, v in phases.items() if any(word in k for word in ENGINE_PHASES))
    return {
        "total": wall - inside,
        "in_process": event["seconds"] - inside,
        "startup": wall - event["seconds"],
        "phases": phases,
    }


def stats(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "n": len(values),
    }


def median(summary: dict[str, Any] | None) -> float | None:
    return None if summary is None else float(summary["median"])


def div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def summarize_step(result: AppResult, step: str) -> dict[str, Any]:
    mine, base = (stats(result.seconds[side][step]) for side in SIDES)
    costs = [c for c in map(overhead, result.events[step], result.walls[step]) if c]
    phase_names = sorted({name for c in costs for name in c["phases"]})
    return {
        "buildpy": mine,
        "baseline": base,
        "ratio": div(median(mine), median(base)),
        "overhead": stats([c["total"] for c in costs]),
        "overhead_in_process": stats([c["in_process"] for c in costs]),
        "startup": stats([c["startup"] for c in costs]),
        "phases": {
            n: stats([c["phases"][n] for c in costs if n in c["phases"]]) for n in phase_names
        },
        "dependencies_reused": [e.get("dependencies_reused") for e in result.events[step]],
        "phases_run": [e.get("phases") for e in result.events[step]],
    }


def summarize_app(result: AppResult, builder_size: int) -> dict[str, Any]:
    size = {side: int(statistics.median(result.sizes[side])) for side in SIDES}
    added = {side: size[side] - builder_size for side in SIDES}
    return {
        "steps": {step: summarize_step(result, step) for step in STEPS},
        "size_bytes": size,
        "added_bytes": added,
        "added_ratio": div(added["buildpy"], added["baseline"]),
        "http": result.http,
        "buildpy_peak_rss_mib": round(max(result.rss_kib, default=0) / 1024, 1),
    }


def summarize_upload(rows: list[dict[str, Any]]) -> dict[str, Any]:
    points = [(r["mib"] / 1024, r["upload_seconds"]) for r in rows if r["upload_seconds"]]
    for row in rows:
        if row["upload_seconds"]:
            row["seconds_per_gib"] = round(row["upload_seconds"] / (row["mib"] / 1024), 2)
    return {"rows": rows, "seconds_per_gib_fit": slope(points)}


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares seconds per GiB: the growth rate, without the fixed cost of a build."""
    if len(points) < 2:
        return None
    mx = statistics.mean(x for x, _ in points)
    my = statistics.mean(y for _, y in points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return round(sum((x - mx) * (y - my) for x, y in points) / sxx, 2) if sxx else None


def target(name: str, key: str, value: float | None) -> dict[str, Any]:
    limit, unit = TARGETS[key]
    if value is None:
        verdict = "n/a"
    elif value <= limit:
        verdict = "PASS"
    else:
        verdict = f"MISS by {value / limit - 1:.0%}"
    return {"target": name, "value": value, "limit": limit, "unit": unit, "verdict": verdict}


def app_targets(name: str, app: dict[str, Any]) -> list[dict[str, Any]]:
    steps = app["steps"]

    def mine(step: str) -> float | None:
        return median(steps[step]["buildpy"])

    worst = max((median(steps[s]["overhead"]) or 0.0 for s in STEPS), default=None)
    return [
        target(
            f"{name}: source-only rebuild / baseline",
            "source_vs_baseline",
            steps["source"]["ratio"],
        ),
        target(
            f"{name}: source-only rebuild / full (cold) rebuild",
            "source_vs_full",
            div(mine("source"), mine("cold")),
        ),
        target(f"{name}: cold build / baseline", "cold_vs_baseline", steps["cold"]["ratio"]),
        target(
            f"{name}: add one dependency / cold build",
            "dependency_vs_cold",
            div(mine("dependency"), mine("cold")),
        ),
        target(
            f"{name}: buildpy overhead (worst step, median)",
            "overhead",
            round(worst, 3) if worst is not None else None,
        ),
    ]


def all_targets(
    apps: dict[str, Any],
    upload: dict[str, Any],
    foreign: dict[str, Any],
    startup: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    rows = [row for name, app in apps.items() for row in app_targets(name, app)]
    if startup:
        rows.append(
            target("`buildpy --version` (median)", "version", median(startup["buildpy_version"]))
        )
    rows += [
        target(
            f"{name}: foreign builder, source-only / its cold build",
            "foreign_source_vs_cold",
            f["ratio"],
        )
        for name, f in foreign.items()
    ]
    biggest = [r for r in upload["rows"] if r["mib"] == 1024]
    if biggest:
        rows.append(target("peak RSS, 1 GiB upload", "peak_rss_1gib", biggest[0]["peak_rss_mib"]))
        rows.append(
            target(
                "upload / podman cp, 1 GiB",
                "upload_vs_podman_cp",
                biggest[0]["upload_vs_podman_cp"],
            )
        )
    return rows


def machine(ctx: Context, builder_size: int) -> dict[str, Any]:
    with open("/proc/meminfo") as info:
        mem_kib = int(info.readline().split()[1])
    version = podman(ctx, "version", "--format", "{{.Client.Version}}").stdout.strip()
    commit = run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=False)
    changed = run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"], check=False
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "podman": version,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "buildpy_commit": commit.stdout.strip() + (" (plus uncommitted work)" if changed else ""),
        "builder": f"{BUILDER} {ctx.builder[:12]}",
        "builder_size_bytes": builder_size,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def standing_notes(apps: dict[str, Any], shared_host: bool) -> list[str]:
    notes = [
        "full rebuild = the cold build (no caches); ratios are median / median",
        "overhead = wall time of the buildpy process (default log, `build --format json`) "
        "minus the *_seconds of assemble, commit and dependency phases in its result; "
        "startup = wall time minus the result's build seconds",
        "the wheelhouse server sends no caching headers (like PyPI behind this host's TLS "
        "proxy), so pip's HTTP cache stays empty on both sides; downloads from 127.0.0.1 "
        "cost little either way",
    ]
    if shared_host:
        notes.append(
            "--shared-host: no `buildpy cache prune`; cold builds had no dependency "
            "image of their own, but buildpy's download volume was not cleared"
        )
    reused = [
        r
        for a in apps.values()
        for s in a["steps"].values()
        for r in s["dependencies_reused"]
        if r is not None
    ]
    if apps and not reused:
        notes.append(
            "buildpy logs no dependencies_reused: two-phase builds (dependency layer "
            "reuse) are not in this buildpy; these are 'before' figures"
        )
    else:
        notes.append(
            f"buildpy reused a dependency layer in {sum(map(bool, reused))} of "
            f"{len(reused)} builds (dependencies_reused in its log)"
        )
    return notes


# ----------------------------------------------------------------------------- output


def fmt(summary: dict[str, Any] | None, unit: str = "") -> str:
    if summary is None:
        return "-"
    return f"{summary['min']:.2f} / {summary['median']:.2f}{unit}"


def num(value: float | None, spec: str = ".2f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def times_table(apps: dict[str, Any]) -> list[str]:
    lines = [
        "| app | step | buildpy s (min / median) | baseline s (min / median) "
        "| buildpy / baseline | buildpy overhead s (min / median) |",
        "|---|---|---|---|---|---|",
    ]
    for name, app in apps.items():
        for step in STEPS:
            s = app["steps"][step]
            lines.append(
                f"| {name} | {step} | {fmt(s['buildpy'])} | {fmt(s['baseline'])} "
                f"| {num(s['ratio'], '.2f', 'x')} | {fmt(s['overhead'])} |"
            )
    return lines


def phases_table(apps: dict[str, Any]) -> list[str]:
    lines = ["| app | step | phase | seconds (min / median) |", "|---|---|---|---|"]
    for name, app in apps.items():
        for step in STEPS:
            s = app["steps"][step]
            for phase, summary in s["phases"].items():
                lines.append(f"| {name} | {step} | {phase} | {fmt(summary)} |")
            lines.append(f"| {name} | {step} | (process start-up) | {fmt(s['startup'])} |")
    return lines


def size_table(apps: dict[str, Any]) -> list[str]:
    lines = [
        "| app | buildpy image MB | added to builder MB | baseline image MB "
        "| added to builder MB | buildpy / baseline (added) |",
        "|---|---|---|---|---|---|",
    ]
    for name, app in apps.items():
        size, added = app["size_bytes"], app["added_bytes"]
        lines.append(
            f"| {name} | {size['buildpy'] / 1e6:.1f} | {added['buildpy'] / 1e6:.1f} "
            f"| {size['baseline'] / 1e6:.1f} | {added['baseline'] / 1e6:.1f} "
            f"| {num(app['added_ratio'], '.2f', 'x')} |"
        )
    return lines


def upload_table(upload: dict[str, Any]) -> list[str]:
    lines = [
        "| source tree | buildpy wall s | upload s | upload s per GiB | podman cp s"
        " | upload / podman cp | peak RSS MiB | each pair: upload / podman cp s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in upload["rows"]:
        pairs = ", ".join(
            f"{num(u)} / {num(c)}"
            for u, c in zip(row.get("upload_samples", []), row.get("podman_cp_samples", []))
        )
        lines.append(
            f"| {row['mib']} MiB | {num(row['wall_seconds'])} "
            f"| {num(row['upload_seconds'])} | {num(row.get('seconds_per_gib'))} "
            f"| {num(row.get('podman_cp_seconds'))} | {num(row.get('upload_vs_podman_cp'))} "
            f"| {row['peak_rss_mib']:.1f} | {pairs} |"
        )
    lines.append("")
    lines.append(
        "Medians of each size's pairs; which of the two goes first alternates between pairs."
    )
    lines.append("")
    lines.append(f"Growth (least-squares slope): {num(upload['seconds_per_gib_fit'])} s per GiB.")
    return lines


def foreign_table(foreign: dict[str, Any]) -> list[str]:
    lines = [
        "| app | cold s | source-only s | source / cold | reused (cold; source) | GET / |",
        "|---|---|---|---|---|---|",
    ]
    for name, f in foreign.items():
        reused = f["dependencies_reused"]
        lines.append(
            f"| {name} | {fmt(f['cold'])} | {fmt(f['source'])} | {num(f['ratio'])} "
            f"| {reused['cold']}; {reused['source']} | {f['http']} |"
        )
    return lines


def targets_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| target | measured | limit | verdict |", "|---|---|---|---|"]
    for row in rows:
        unit = row["unit"]
        lines.append(
            f"| {row['target']} | {num(row['value'], '.2f', ' ' + unit)} "
            f"| {row['limit']} {unit} | {row['verdict']} |"
        )
    return lines


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    parts = [
        f"Machine: {m['nproc']} CPUs, {m['memory_gib']} GiB, Podman {m['podman']}, "
        f"kernel {m['kernel']}; builder {m['builder']}; buildpy {m['buildpy_commit']}; "
        f"{m['date']}; {report['reps']} repetitions; run took {report['runtime_seconds']} s; "
        f"load average {m['loadavg_at_start']} at the start, {m['loadavg_at_end']} at the end.",
        "",
        "### Build times",
        "",
        *times_table(report["apps"]),
        "",
        "### buildpy phases (from its result, `build --format json`)",
        "",
        *phases_table(report["apps"]),
        "",
        "### Image size",
        "",
        *size_table(report["apps"]),
    ]
    if report["upload"]["rows"]:
        parts += ["", "### Source upload (buildpy)", "", *upload_table(report["upload"])]
    if report.get("foreign"):
        parts += [
            "",
            "### Foreign builder (no buildpy labels)",
            "",
            *foreign_table(report["foreign"]),
        ]
    if report.get("startup"):
        st = report["startup"]
        parts += [
            "",
            "### Start-up",
            "",
            "| command | s (min / median) |",
            "|---|---|",
            f"| `buildpy --version` | {fmt(st['buildpy_version'])} |",
            f"| `python -c pass` (same interpreter, the baseline) | {fmt(st['bare_python'])} |",
        ]
    parts += ["", "### Targets (issues 4 and 13)", "", *targets_table(report["targets"])]
    http = [
        f"{a} {side}: {v}" for a, app in report["apps"].items() for side, v in app["http"].items()
    ]
    parts += ["", "### Notes", "", f"- GET / on each cold image: {'; '.join(http)}"]
    parts += [f"- {note}" for note in report["notes"]]
    spent = ", ".join(f"{k} {v} s" for k, v in report["housekeeping_seconds"].items())
    parts += [f"- time outside the measured builds: {spent or 'none recorded'}"]
    return "\n".join(parts)


# ----------------------------------------------------------------------------- main


STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"bench [{time.monotonic() - STARTED:6.1f} s]: {message}", file=sys.stderr, flush=True)


def measure_startup(reps: int = STARTUP_REPS) -> dict[str, Any]:
    """Wall time of ``buildpy --version`` beside a bare interpreter's start (``python -c
    pass``, the same interpreter), alternating, ``reps`` times each."""
    python = str(BUILDPY.parent / "python")
    times: dict[str, list[float]] = {"buildpy_version": [], "bare_python": []}
    for i in range(reps):
        pair = [
            ("buildpy_version", [str(BUILDPY), "--version"]),
            ("bare_python", [python, "-c", "pass"]),
        ]
        for name, cmd in pair if i % 2 == 0 else reversed(pair):
            start = time.monotonic()
            run(cmd)
            times[name].append(time.monotonic() - start)
    return {name: stats(values) for name, values in times.items()}


def compile_buildpy() -> str:
    """Byte-compile buildpy's modules, as installing a wheel does, so that no measured run
    compiles them: with PYTHONDONTWRITEBYTECODE set (as on the project's machines) an
    editable install never writes a changed module's bytecode, and every run would pay
    for compiling it. Returns a note for the report."""
    python = str(BUILDPY.parent / "python")
    run([python, "-m", "compileall", "-q", str(ROOT / "buildpy")])
    flag = os.environ.get("PYTHONDONTWRITEBYTECODE")
    said = " (PYTHONDONTWRITEBYTECODE is set here)" if flag else ""
    return f"buildpy's modules were byte-compiled before the runs, as a wheel install does{said}"


def measure(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    ctx.notes.append(compile_buildpy())
    load = [round(x, 2) for x in os.getloadavg()]
    builder_size = image_size(ctx, ctx.builder)
    apps = {
        name: summarize_app(measure_app(ctx, args.known[name], args.reps), builder_size)
        for name in args.apps
    }
    foreign = measure_foreign(ctx, [args.known[name] for name in args.foreign_apps], args.reps)
    upload = summarize_upload(measure_upload(ctx, args.upload_mib, args.reps))
    startup = measure_startup()
    return {
        "machine": {**machine(ctx, builder_size), "loadavg_at_start": load},
        "reps": args.reps,
        "apps": apps,
        "upload": upload,
        "foreign": foreign,
        "startup": startup,
        "targets": all_targets(apps, upload, foreign, startup),
        "notes": ctx.notes + standing_notes(apps, ctx.shared_host),
        "housekeeping_seconds": ctx.spent,
    }


def _list(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    return lambda text: [kind(item) for item in text.split(",") if item.strip()]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions per app (default 3)")
    parser.add_argument(
        "--apps",
        type=_list(str),
        default=None,
        help="comma-separated, from: " + ",".join(APPS) + " and the --app names (default: all)",
    )
    parser.add_argument(
        "--app",
        type=given_app,
        action="append",
        default=[],
        metavar="DIR[:VIEW]",
        help="also measure this application (needs requirements.txt; VIEW: the file the"
        " source-only step changes); named by its directory; its packages are collected once"
        " from the index (may be repeated)",
    )
    parser.add_argument(
        "--upload-mib",
        type=_list(int),
        default=list(UPLOAD_MIB),
        help="source tree sizes for the upload figures (default 256,512,1024; '' to skip)",
    )
    parser.add_argument(
        "--foreign-apps",
        type=_list(str),
        default=None,
        help="apps to build on the foreign builder (default: all; '' to skip)",
    )
    parser.add_argument(
        "--shared-host",
        action="store_true",
        help="do not run `buildpy cache prune` (it clears every user's cache);"
        " remove only this run's dependency images",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the JSON here")
    args = parser.parse_args(argv)
    args.known = dict(APPS)
    for app in args.app:
        if app.name in args.known:
            parser.error(f"--app {app.source}: an app named {app.name} is measured already")
        args.known[app.name] = app
    args.apps = list(args.known) if args.apps is None else args.apps
    args.foreign_apps = list(args.known) if args.foreign_apps is None else args.foreign_apps
    unknown = [a for a in [*args.apps, *args.foreign_apps] if a not in args.known]
    if unknown or args.reps < 1:
        parser.error(f"unknown apps {unknown}" if unknown else "--reps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)

    def report() -> dict[str, Any]:
        wanted = {*args.apps, *args.foreign_apps}
        for app in args.app:  # their packages, from the index, before anything is measured
            if app.name in wanted:
                args.known[app.name] = collect_wheels(app)
        with session([args.known[name] for name in wanted]) as ctx:
            ctx.shared_host = args.shared_host
            if args.shared_host:  # its cold builds must not evict others' cached layers
                ctx.buildpy_env["BUILDPY_CACHE_MAX"] = "off"
            return measure(ctx, args)

    return finish(report, markdown, args.json)


def finish(
    report: Callable[[], dict[str, Any]],
    render: Callable[[dict[str, Any]], str],
    json_path: Path | None,
) -> int:
    """Measure (with the wheelhouse ready), then print markdown and JSON; the exit code.

    SIGTERM stops it as Ctrl-C does, so its Podman service (in a session of its own) and
    what it made are removed: a terminated run used to leave the service running."""
    started = time.monotonic()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        ensure_wheelhouse()
        found = report()
    except BenchError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; what it made was removed", file=sys.stderr)
        return 130
    found["runtime_seconds"] = round(time.monotonic() - started, 1)
    document = json.dumps(found, indent=2)
    print(render(found))
    print()
    print(document)
    if json_path:
        json_path.write_text(document + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
