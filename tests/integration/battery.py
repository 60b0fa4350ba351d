"""The failure battery's harness: run `buildpy build` as a user would, then look for
anything it left behind.

Each case gets a scratch directory of its own under /tmp (short, so that unix sockets
in it fit in 108 bytes), which is also the build's ``TMPDIR``: every temporary file
buildpy makes (``tempfile``: the private service's socket directory, incremental
artifacts) lands there, so "no temporary file left" is "the case's TMPDIR is empty",
whatever other builds on this machine do in /tmp at the same time. (Rootless without
XDG_RUNTIME_DIR, Podman keeps its own run-time directories there too: ``PODMAN_RUN_DIRS``.)
Every battery module is marked ``rootless``: each case also runs in CI's rootless pass
(scripts/test-rootless), as an ordinary user without a login session. The build's
environment carries a marker variable, so every process it started (a private
``podman system service``, conmon under it) can be found by its environment.

After the build has exited, ``Outcome.leftovers`` lists, from the shared image storage
(through the session's Podman service, by API): containers whose name carries the
build's PID (``buildpy-KIND-hHOST-pPID-...``; at the session's end ``no_leftovers`` also
looks for any container whose source label lies under /tmp/bpt-), images labelled with
the case's sources that it did not ask for (looked for only when the build reached an
engine: one that never did cannot have made any), ``buildpy*`` volumes other than the
download cache, live processes carrying the build's marker, files in TMPDIR. What a
case made on purpose (its tagged image, its dependency layer) is removed at the case's
end; anything found left behind is removed too, after being reported.

Stand-ins for Podman, so that a case can say exactly when something goes wrong:

* ``Tripwire``: a socket that counts connections and never answers. Cases that must
  fail before any engine work point ``CONTAINER_HOST`` at it and assert it was never
  touched.
* ``EngineProxy``: forwards to the real service and watches the API calls go by; on a
  chosen call it can signal the build (Ctrl-C during commit), hold the call forever (a
  hung service, for ``--timeout``) or drop every connection (a service that died).
* ``SlowIndex``: a package index on 127.0.0.1 that answers after a delay, to keep a
  build inside its dependency phase for as long as a case needs.
"""

from __future__ import annotations

import functools
import http.client
import http.server
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import BATTERY_SCRATCH, BUILDPY, WHEELHOUSE
from storage import LOCAL_PODMAN

BUILDER = "localhost/buildpy/python-311-minimal"
SOURCE_LABEL = "io.openshift.s2i.build.source-location"
MARKER = "BUILDPY_BATTERY_CASE"
DOWNLOADS_VOLUME = "buildpy-downloads"
DEPENDENCY_TAG = re.compile(r"localhost/buildpy-cache/dependencies:[0-9a-f]{32}\b")
# No DAC override: root meets "permission denied" like anyone else.
NO_DAC = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")

APP_PY = 'print("battery app")\n'

Files = Mapping[str, "str | bytes"]


# --------------------------------------------------------------------------- Podman's API


def _socket_path(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "unix":
        raise ValueError(f"not a unix:// URL: {url}")
    return parsed.path


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("podman", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class Api:
    """Just enough of the libpod API to list and remove what a case made."""

    def __init__(self, url: str) -> None:
        self._path = _socket_path(url)

    def call(self, method: str, path: str, timeout: float = 60) -> Any:
        """One call; a listing is tried again when an image vanished while it was made
        (other builds share this storage and remove images at any time)."""
        for attempt in range(10):
            status, body = self._once(method, path, timeout)
            if status == 500 and method == "GET" and attempt < 9:
                time.sleep(0.2)
                continue
            break
        if status >= 400 and status != 404:
            raise RuntimeError(f"{method} {path}: {status} {body[:300]!r}")
        return json.loads(body) if body and status != 404 else None

    def _once(self, method: str, path: str, timeout: float) -> tuple[int, bytes]:
        conn = _UnixConnection(self._path, timeout)
        try:
            conn.request(method, f"/v4.0.0/libpod{path}")
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def containers(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/containers/json?all=true") or [])

    def images(self, label: str) -> list[dict[str, Any]]:
        """The images carrying ``label`` (``name=value``)."""
        query = urllib.parse.quote(json.dumps({"label": [label]}))
        return list(self.call("GET", f"/images/json?filters={query}") or [])

    def volumes(self) -> list[str]:
        return [str(v["Name"]) for v in self.call("GET", "/volumes/json") or []]

    def image(self, ref: str) -> dict[str, Any] | None:
        found = self.call("GET", f"/images/{urllib.parse.quote(ref, safe='')}/json")
        return dict(found) if found else None

    def remove_container(self, cid: str) -> None:
        self.call("DELETE", f"/containers/{cid}?force=true&timeout=0")

    def remove_image(self, ref: str) -> None:
        self.call("DELETE", f"/images/{urllib.parse.quote(ref, safe='')}?force=true")


# --------------------------------------------------------------------------- outcome


@dataclass
class Outcome:
    """How one `buildpy build` ended, and what it left behind."""

    code: int
    stdout: str
    stderr: str
    seconds: float
    leftovers: list[str]
    engine_contacts: int | None = None  # connections to the Tripwire, when used

    @property
    def errors(self) -> list[str]:
        return [
            line[len("ERROR: ") :]
            for line in self.stderr.splitlines()
            if line.startswith("ERROR: ")
        ]

    @property
    def hints(self) -> list[str]:
        prefix = "  hint: "
        return [line[len(prefix) :] for line in self.stderr.splitlines() if line.startswith(prefix)]

    def expect(
        self,
        code: int,
        message: str,
        hint: str | None,
        *,
        engine: bool | None = None,
        within: float | None = None,
    ) -> None:
        """Exit ``code``, one ERROR line holding ``message``, a hint holding ``hint`` (None:
        no hint line), nothing on stdout, nothing left behind; with ``engine=False``, the
        engine never contacted; with ``within``, done in that many seconds."""
        context = f"exit {self.code}, stderr:\n{self.stderr[-3000:]}"
        assert self.code == code, context
        assert len(self.errors) == 1, context
        assert message in self.errors[0], context
        if hint is None:
            assert self.hints == [], context
        else:
            assert len(self.hints) == 1 and hint in self.hints[0], context
        assert self.stdout == "", context
        assert self.leftovers == [], f"left behind: {self.leftovers}\n{context}"
        if engine is False:
            assert self.engine_contacts == 0, f"the engine was contacted\n{context}"
        if within is not None:
            assert self.seconds < within, f"took {self.seconds:.1f} s\n{context}"

    def expect_success(self, printed: str | None = None) -> None:
        """Exit 0, no ERROR line, the result on stdout, nothing left behind."""
        context = f"exit {self.code}, stderr:\n{self.stderr[-3000:]}"
        assert self.code == 0, context
        assert self.errors == [], context
        if printed is not None:
            assert self.stdout.strip() == printed, context
        assert self.leftovers == [], f"left behind: {self.leftovers}\n{context}"

    def warnings(self) -> list[str]:
        """The structured log's warnings (JSON lines, as logs are off a terminal)."""
        found = []
        for line in self.stderr.splitlines():
            if line.startswith("{"):
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("level") == "warning":
                    found.append(str(event.get("event")))
        return found

    def logged(self, event: str) -> list[dict[str, Any]]:
        """The structured log entries whose event is ``event``."""
        found = []
        for line in self.stderr.splitlines():
            if line.startswith("{") and f'"{event}"' in line:
                entry = json.loads(line)
                if entry.get("event") == event:
                    found.append(entry)
        return found


# --------------------------------------------------------------------------- stand-ins


class Tripwire:
    """A unix socket that counts the connections made to it and never answers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"unix://{path}"
        self.contacts = 0
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(8)
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.contacts += 1
            self._open.append(conn)  # held open, unanswered, until close()

    def close(self) -> None:
        _cut(self._server)  # wakes accept(); then nothing uses the sockets any more
        self._thread.join(5)
        self._server.close()
        for conn in self._open:
            conn.close()


_REQUEST = re.compile(rb"(GET|POST|PUT|DELETE|HEAD) (/\S*) HTTP/1\.[01]\r\n")


@dataclass
class _Rule:
    pattern: re.Pattern[str]
    action: str  # "signal", "hold" or "drop"
    signum: int = 0
    delay: float = 0.0
    times: int = 1
    hit: threading.Event = field(default_factory=threading.Event)


class EngineProxy:
    """Forwards a unix socket to the real Podman service and watches the calls go by.

    ``on(pattern, ...)``: when a call whose ``METHOD /path`` (API version stripped)
    matches ``pattern`` goes by, send ``signum`` to the build and forward the call
    ``delay`` seconds later (so the signal lands while the build waits for the answer,
    however fast the service is), ``hold`` the call (never forwarded: a hung service),
    or ``drop`` every connection and refuse new ones (a service that died).
    """

    def __init__(self, path: Path, upstream: str) -> None:
        self.path = path
        self.url = f"unix://{path}"
        self.calls: list[str] = []
        self.pid: int | None = None
        self._upstream = _socket_path(upstream)
        self._rules: list[_Rule] = []
        self._dead = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def on(
        self,
        pattern: str,
        action: str = "signal",
        *,
        signum: int = signal.SIGINT,
        delay: float = 0.0,
        times: int = 1,
    ) -> threading.Event:
        rule = _Rule(re.compile(pattern), action, signum, delay, times)
        self._rules.append(rule)
        return rule.hit

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self._dead:
                client.close()
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self._upstream)
            except OSError:
                client.close()
                upstream.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, requests: bool) -> None:
        tail = b""
        while True:
            try:
                data = src.recv(1 << 16)
            except OSError:
                break
            if not data:
                break
            if requests:
                action, pause = self._watch(tail, data)
                tail = (tail + data)[-512:]
                time.sleep(pause)
                if action == "hold":
                    self._drain(src)
                    break
                if action == "drop":
                    self.kill()
                    break
            try:
                dst.sendall(data)
            except OSError:
                break
        for sock in (src, dst):  # wakes the other pump; close() frees them, once
            _cut(sock)

    def _watch(self, tail: bytes, data: bytes) -> tuple[str | None, float]:
        """Record the calls that start in ``data``; the first rule's action they trigger,
        and how long to wait before forwarding them (a signal rule's ``delay``)."""
        chosen = None
        pause = 0.0
        buf = tail + data
        for found in _REQUEST.finditer(buf):
            if found.end() <= len(tail):
                continue
            path = re.sub(r"^/v[0-9.]+", "", found.group(2).decode(errors="replace"))
            call = f"{found.group(1).decode()} {path}"
            self.calls.append(call)
            for rule in self._rules:
                if rule.times > 0 and rule.pattern.search(call):
                    rule.times -= 1
                    rule.hit.set()
                    if rule.action == "signal":
                        self._signal(rule.signum)
                        pause = max(pause, rule.delay)
                    elif chosen is None:
                        chosen = rule.action
        return chosen, pause

    def _signal(self, signum: int) -> None:
        if self.pid is not None:
            with suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    @staticmethod
    def _drain(sock: socket.socket) -> None:
        """Swallow the rest of a held call until the client gives up."""
        while True:
            try:
                if not sock.recv(1 << 16):
                    return
            except OSError:
                return

    def kill(self) -> None:
        """Die as a service does: every connection cut, new ones refused."""
        self._dead = True
        _cut(self._server)  # close() would leave accept() listening
        with self._lock:
            for sock in self._sockets:
                _cut(sock)

    def close(self) -> None:
        self.kill()
        self._server.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()


def _cut(sock: socket.socket) -> None:
    """Cut a connection, waking whichever thread waits on it; the descriptor is freed
    (close) only once no thread uses the object, so it is never reused under one."""
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _IndexHandler(http.server.SimpleHTTPRequestHandler):
    index: SlowIndex

    def do_GET(self) -> None:
        self.index.requests.append((self.path, self.headers.get("Authorization")))
        self.index.hit.set()
        if self.index.delay and len(self.index.requests) <= self.index.slow_requests:
            self.index.release.wait(self.index.delay)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


class SlowIndex:
    """The wheelhouse as a find-links page on 127.0.0.1, its first answers ``delay`` late."""

    def __init__(self, delay: float = 0.0, slow_requests: int = 1) -> None:
        self.delay = delay
        self.slow_requests = slow_requests
        self.requests: list[tuple[str, str | None]] = []
        self.hit = threading.Event()
        self.release = threading.Event()
        handler = type("Handler", (_IndexHandler,), {"index": self})
        self._server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(handler, directory=str(WHEELHOUSE))
        )
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def pip_args(self, url: str | None = None) -> list[str]:
        """Options that make pip in the build install from this index only."""
        where = url or self.url
        return [
            "--network",
            "host",
            "--build-env",
            f"PIP_INDEX_URL={where}",
            "--build-env",
            f"PIP_FIND_LINKS={where}",
            "--build-env",
            "PIP_NO_INDEX=1",
        ]

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


# --------------------------------------------------------------------------- running builds


class Running:
    """A build in progress: its stderr is read as it comes, so a case can wait for a line."""

    def __init__(self, case: Case, proc: subprocess.Popen[str], started: float) -> None:
        self.case = case
        self.proc = proc
        self.started = started
        self._lines: list[str] = []
        self._changed = threading.Condition()
        assert proc.stderr is not None
        self._reader = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._lines.append("")  # end of stream
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 120) -> None:
        """Block until a stderr line contains ``text``; fail if the build ends first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(text in line for line in self._lines):
                if (self._lines and self._lines[-1] == "") or time.monotonic() > deadline:
                    raise AssertionError(
                        f"{text!r} never appeared on stderr:\n{''.join(self._lines)[-3000:]}"
                    )
                self._changed.wait(0.5)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def finish(
        self, timeout: float = 120, grace: float = 0.0, keep: bool = False, images: bool = True
    ) -> Outcome:
        """Wait for the build to end; what it printed and what it left behind (``grace``:
        seconds its processes get to go; ``keep``: leave its containers for a sweep to
        find; ``images``: look for images it left, unless the case does it itself)."""
        assert self.proc.stdout is not None and self.proc.stderr is not None
        with self.proc.stdout, self.proc.stderr:
            try:
                self.proc.wait(timeout)  # stdout holds one line at most: no pipe fills
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"the build did not end within {timeout} s:\n{''.join(self._lines)[-3000:]}"
                ) from None
            seconds = time.monotonic() - self.started
            stdout = self.proc.stdout.read()
            self._reader.join(timeout)
        stderr = "".join(self._lines)
        return self.case.outcome(
            self.proc.pid, self.proc.returncode, stdout, stderr, seconds, grace, keep, images
        )


# Rootless Podman without XDG_RUNTIME_DIR (no login session) derives its run-time
# directories from TMPDIR: they land in the case's TMPDIR and outlive the build as
# Podman's own state.
RUN_DIRS_IN_TMPDIR = os.getuid() != 0 and not os.environ.get("XDG_RUNTIME_DIR")
PODMAN_RUN_DIRS = (
    {f"podman-run-{os.getuid()}", f"containers-user-{os.getuid()}"} if RUN_DIRS_IN_TMPDIR else set()
)


class Case:
    """One battery case: a scratch directory, builds run in it, what they left checked.

    ``run`` and ``start`` take `buildpy build` arguments; ``host`` picks the service:
    ``None`` is the session's Podman service, ``"tripwire"`` a socket that must never be
    contacted, ``"unset"`` no CONTAINER_HOST at all (buildpy starts a private service),
    anything else is used as CONTAINER_HOST as it is.
    """

    def __init__(self, podman_url: str) -> None:
        self.podman_url = podman_url
        self.api = Api(podman_url)
        scratch = Path(BATTERY_SCRATCH)
        self.dir = Path(tempfile.mkdtemp(prefix=scratch.name, dir=scratch.parent))
        self.tmp = self.dir / "tmp"
        self.tmp.mkdir()
        self.marker = secrets.token_hex(8)
        self.expected_images: list[str] = []  # tags a case made on purpose
        self.cache_images: list[str] = []  # dependency layers a case made
        self.sources: list[Path] = []
        self.pids: list[int] = []  # of every build started
        self._marks: dict[int, str] = {}  # build PID: the marker its processes carry
        self._tripwire: Tripwire | None = None
        self._closers: list[Callable[[], None]] = []
        self._indexes: list[SlowIndex] = []

    # ------------------------------------------------------------------ inputs

    def app(self, files: Files, name: str = "app") -> Path:
        """A source directory holding ``files`` (``.s2i/bin/*`` made executable)."""
        root = self.dir / name
        root.mkdir(parents=True, exist_ok=True)
        self.sources.append(root)
        for rel, content in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
            if rel.startswith(".s2i/bin/"):
                path.chmod(0o755)
        return root

    def tag(self, name: str = "app") -> str:
        tag = f"localhost/buildpy-test/battery-{name}-{self.marker}:latest"
        self.expected_images.append(tag)
        return tag

    @property
    def tripwire(self) -> Tripwire:
        if self._tripwire is None:
            self._tripwire = Tripwire(self.dir / "tripwire.sock")
            self._closers.append(self._tripwire.close)
        return self._tripwire

    def proxy(self) -> EngineProxy:
        proxy = EngineProxy(self.dir / "proxy.sock", self.podman_url)
        self._closers.append(proxy.close)
        return proxy

    def index(self, delay: float = 0.0, slow_requests: int = 1) -> SlowIndex:
        index = SlowIndex(delay, slow_requests)
        self._indexes.append(index)
        self._closers.append(index.close)
        return index

    def release_indexes(self) -> None:
        """Let every held index request be answered now."""
        for index in self._indexes:
            index.release.set()

    # ------------------------------------------------------------------ running

    def _command(self, args: Sequence[str], no_dac: bool) -> list[str]:
        cmd = [*BUILDPY, "--log-format", "json", "build", *args]
        return [*NO_DAC, *cmd] if no_dac else cmd

    def _env(self, host: str | None, env: Mapping[str, str] | None, mark: str) -> dict[str, str]:
        run_env = {k: v for k, v in os.environ.items() if k != "CONTAINER_HOST"}
        run_env.update({"TMPDIR": str(self.tmp), MARKER: mark})
        if host is None:
            run_env["CONTAINER_HOST"] = self.podman_url
        elif host == "tripwire":
            run_env["CONTAINER_HOST"] = self.tripwire.url
        elif host != "unset":
            run_env["CONTAINER_HOST"] = host
        run_env.update(env or {})
        return run_env

    def start(
        self,
        *args: str,
        host: str | None = None,
        env: Mapping[str, str] | None = None,
        no_dac: bool = False,
        stdin: int | None = subprocess.DEVNULL,
    ) -> Running:
        """Start `buildpy build ARGS`; JSON logs, so warnings can be read back."""
        mark = f"{self.marker}-{len(self.pids)}"  # one per build: builds may overlap
        started = time.monotonic()
        proc = subprocess.Popen(
            self._command(args, no_dac),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self._env(host, env, mark),
            text=True,
            errors="replace",
        )
        self.pids.append(proc.pid)
        self._marks[proc.pid] = mark
        return Running(self, proc, started)

    def run(
        self,
        *args: str,
        host: str | None = None,
        env: Mapping[str, str] | None = None,
        no_dac: bool = False,
        timeout: float = 300,
    ) -> Outcome:
        """Run `buildpy build ARGS` to its end."""
        return self.start(*args, host=host, env=env, no_dac=no_dac).finish(timeout)

    # ------------------------------------------------------------------ what was left

    def outcome(
        self,
        pid: int,
        code: int,
        stdout: str,
        stderr: str,
        seconds: float,
        grace: float = 0.0,
        keep: bool = False,
        images: bool = True,
    ) -> Outcome:
        self.cache_images += DEPENDENCY_TAG.findall(stderr)
        if code == 0 and stdout.strip() and stdout.strip() not in self.expected_images:
            self.expected_images.append(stdout.strip())  # an untagged build's image ID
        leftovers = self._left_by(pid, grace, keep, images)
        contacts = self._tripwire.contacts if self._tripwire is not None else None
        return Outcome(code, stdout, stderr, seconds, leftovers, contacts)

    def _left_by(self, pid: int, grace: float, keep: bool, images: bool) -> list[str]:
        """What a build left; removed unless ``keep`` (the containers, for a sweep to find)."""
        found = self._processes(self._marks[pid], grace)
        found += [
            f"file in TMPDIR: {p.name}"
            for p in sorted(self.tmp.iterdir())
            if p.name not in PODMAN_RUN_DIRS
        ]
        for container in self.api.containers():
            names = container.get("Names") or []
            if any(n.startswith("buildpy-") and f"-p{pid}-" in n for n in names):
                found.append(f"container {names}")
                if not keep:
                    self.api.remove_container(str(container["Id"]))
        if images and (self._tripwire is None or self._tripwire.contacts):
            found += self._images_left()
        found += [
            f"volume {name}"
            for name in self.api.volumes()
            if name.startswith("buildpy") and name != DOWNLOADS_VOLUME
        ]
        return found

    def _images_left(self) -> list[str]:
        """Images of this case's sources that it did not ask for (listing every image
        takes seconds on a busy machine; a filter on the source label does not)."""
        expected = {self._image_id(ref) for ref in self.expected_images}
        found = []
        for source in self.sources:
            for image in self.api.images(f"{SOURCE_LABEL}={source}"):
                if image["Id"] not in expected:
                    found.append(f"image {image['Id'][:12]} {image.get('Names') or ''}")
                    self.api.remove_image(str(image["Id"]))
        return found

    def _image_id(self, ref: str) -> str | None:
        image = self.api.image(ref)
        return str(image["Id"]) if image else None

    def _processes(self, mark: str, grace: float) -> list[str]:
        """Live processes started by a build of this case (they carry its marker)."""
        deadline = time.monotonic() + grace
        while True:
            alive = marked_processes(f"{MARKER}={mark}")
            if not alive or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        for pid in alive:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return [f"process {pid} {cmdline(pid)}" for pid in alive]

    def containers_of(self, pid: int) -> list[str]:
        """Names of the working containers a build process made that still exist."""
        return [
            name
            for container in self.api.containers()
            for name in container.get("Names") or []
            if name.startswith("buildpy-") and f"-p{pid}-" in name
        ]

    def close(self) -> None:
        for pid in self.pids:  # whatever a failed case left
            for name in self.containers_of(pid):
                self.api.remove_container(name)
        for close in reversed(self._closers):
            close()
        for ref in {*self.expected_images, *self.cache_images}:
            image = self.api.image(ref)
            if image is not None:
                self.api.remove_image(str(image["Id"]))
        for path in self.dir.rglob("*"):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(self.dir, ignore_errors=True)


def marked_processes(marker: str) -> list[int]:
    needle = marker.encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            continue
        if needle in environ:
            found.append(int(entry))
    return found


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


@contextmanager
def image_root(tag: str) -> Iterator[Path]:
    """The image's file system, mounted read-only on the host for the block (by the local
    podman CLI: a remote one, as CONTAINER_HOST makes it, cannot mount). Rootless Podman
    mounts only in its own namespace: there, a copy of the application's directory
    (/opt/app-root/src) under an otherwise empty root, by `podman cp` from a container of
    the image (names, contents and links as they are; owners become the user's)."""
    if os.getuid() != 0:
        with _copied_app_dir(tag) as root:
            yield root
        return
    done = subprocess.run([*LOCAL_PODMAN, "image", "mount", tag], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    try:
        yield Path(done.stdout.strip())
    finally:
        subprocess.run([*LOCAL_PODMAN, "image", "unmount", tag], capture_output=True, check=False)


@contextmanager
def _copied_app_dir(tag: str) -> Iterator[Path]:
    made = subprocess.run([*LOCAL_PODMAN, "create", tag], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    container = made.stdout.strip()
    root = Path(tempfile.mkdtemp(prefix="buildpy-test-image-"))
    try:
        parent = root / "opt/app-root"
        parent.mkdir(parents=True)
        copy = subprocess.Popen(
            [*LOCAL_PODMAN, "cp", f"{container}:/opt/app-root/src", "-"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        unpacked = subprocess.run(
            ["tar", "-x", "-C", str(parent)], stdin=copy.stdout, capture_output=True
        )
        _, error = copy.communicate()
        assert copy.returncode == 0 and unpacked.returncode == 0, (error, unpacked.stderr)
        yield root
    finally:
        subprocess.run([*LOCAL_PODMAN, "rm", "-f", container], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class Failure:
    """One row of a battery table: a source, arguments, and the failure they must give.

    ``files`` make the source; ``args`` follow ``build APP`` and may say ``{app}`` or
    ``{dir}`` (the source and the case directory); so may ``message``. ``setup`` runs on
    the source before the build. ``host``: see ``Case``; with the default, the tripwire,
    the engine must not be contacted unless ``engine`` says it is (the failure is then
    the tripwire's silence: the input got past every check made before the engine).
    ``no_dac``: run without root's permission override, so that mode 000 is unreadable.
    """

    id: str
    code: int
    message: str
    hint: str | None
    files: Files = field(default_factory=lambda: {"app.py": APP_PY})
    args: tuple[str, ...] = ()
    setup: Callable[[Path], object] | None = None
    host: str | None = "tripwire"
    no_dac: bool = False
    source: str = "{app}"
    engine: bool = False
    xfail: str | None = None  # a known bug: the row must fail until it is fixed

    def run(self, case: Case) -> Outcome:
        app = case.app(self.files)
        if self.setup is not None:
            self.setup(app)
        where = {"app": str(app), "dir": str(case.dir)}
        args = [self.source.format(**where), *(a.format(**where) for a in self.args)]
        return case.run(*args, host=self.host, no_dac=self.no_dac)

    def check(self, case: Case) -> Outcome:
        outcome = self.run(case)
        where = {"app": str(case.dir / "app"), "dir": str(case.dir)}
        message = self.message.format(**where)
        if self.host == "tripwire" and self.engine:
            assert outcome.engine_contacts, f"the build never reached the engine:\n{outcome.stderr}"
        engine = False if self.host == "tripwire" and not self.engine else None
        outcome.expect(self.code, message, self.hint, engine=engine)
        return outcome


def swept(case: Case, outcome: Outcome, pid: int, host: str | None = None) -> Outcome:
    """The build left its working container, and the next build (through ``host``, see
    ``Case``) removes it; that next build's outcome."""
    left = case.containers_of(pid)
    assert len(left) == 1 and left[0].startswith("buildpy-build-h"), outcome.stderr
    nxt = case.app({"app.py": APP_PY}, name="next")
    tag = case.tag("next")
    after = case.run(str(nxt), "--builder", BUILDER, "--tag", tag, host=host)
    after.expect_success(tag)
    assert case.containers_of(pid) == []
    removed = after.logged("removed a working container left by a killed build")
    assert left[0] in [entry["container"] for entry in removed], after.stderr
    return after


def unreadable(*names: str) -> Callable[[Path], None]:
    """A ``Failure.setup`` that takes every permission off these files of the source."""

    def setup(app: Path) -> None:
        for name in names:
            (app / name).chmod(0)

    return setup


def params(rows: Sequence[Failure]) -> list[Any]:
    """The rows as pytest parameters: their ids, and a strict xfail for known bugs."""
    import pytest

    return [
        pytest.param(
            row,
            id=row.id,
            marks=[pytest.mark.xfail(strict=True, reason=row.xfail)] if row.xfail else [],
        )
        for row in rows
    ]
