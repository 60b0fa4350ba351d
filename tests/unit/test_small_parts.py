"""Pure helpers: scripts, commit changes, tags, configuration, git, service discovery."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buildpy import builders, config, gitinfo, image, scripts, service
from buildpy.config import BuildOptions
from buildpy.engine import ImageInfo
from buildpy.errors import BuilderImageError, EngineUnavailable, UsageError

LABEL = {"io.openshift.s2i.scripts-url": "image:///usr/libexec/s2i/"}


def test_scripts_from_image_label() -> None:
    chosen = scripts.choose(LABEL, set(), "b")
    assert (chosen.assemble, chosen.run) == ("/usr/libexec/s2i/assemble", "/usr/libexec/s2i/run")


def test_scripts_from_source_win_one_by_one() -> None:
    chosen = scripts.choose(LABEL, {"assemble"}, "b")
    assert (chosen.assemble, chosen.run) == ("/tmp/scripts/assemble", "/usr/libexec/s2i/run")


def test_old_label_name_still_works() -> None:
    chosen = scripts.choose({"io.s2i.scripts-url": "image:///s2i"}, set(), "b")
    assert chosen.run == "/s2i/run"


@pytest.mark.parametrize("url", ["http://example.invalid/s2i", "file:///s2i", "image://relative"])
def test_scripts_that_would_need_downloading_are_refused(url: str) -> None:
    with pytest.raises(BuilderImageError, match="image:///PATH"):
        scripts.choose({"io.openshift.s2i.scripts-url": url}, set(), "b")


def test_no_label_but_all_scripts_in_source_is_fine() -> None:
    chosen = scripts.choose({}, {"assemble", "run"}, "b")
    assert chosen.run == "/tmp/scripts/run"


def test_source_scripts_found(tmp_path: Path) -> None:
    (tmp_path / ".s2i" / "bin").mkdir(parents=True)
    (tmp_path / ".s2i" / "bin" / "assemble").write_text("#!/bin/sh\n")
    (tmp_path / ".s2i" / "bin" / "notes.txt").write_text("")
    assert set(scripts.source_scripts(tmp_path)) == {"assemble"}


def test_commit_changes_keep_the_builder_shape() -> None:
    builder = ImageInfo(id="i", ref="r", user="1001", workdir="/opt/app-root/src")
    changes = image.commit_changes(builder, "/usr/libexec/s2i/run")
    assert changes == (
        'CMD ["/usr/libexec/s2i/run"]',
        "ENTRYPOINT []",
        "USER 1001",
        "WORKDIR /opt/app-root/src",
    )


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("app", ("app", "latest")),
        ("app:v1", ("app", "v1")),
        ("localhost/app:v1", ("localhost/app", "v1")),
        ("registry:5000/app", ("registry:5000/app", "latest")),
        ("registry:5000/app:2", ("registry:5000/app", "2")),
    ],
)
def test_split_tag(ref: str, expected: tuple[str, str]) -> None:
    assert image.split_tag(ref) == expected


def test_pyproject_fills_only_what_the_cli_left(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.buildpy]\nbuilder = "localhost/buildpy/python-313"\ntag = "app:v2"\n'
    )
    cli = BuildOptions(source=tmp_path, tag="mine:1")
    resolved = config.with_pyproject(cli, frozenset({"tag"}))
    assert resolved.builder == "localhost/buildpy/python-313"
    assert resolved.tag == "mine:1"


def test_pyproject_unknown_key_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.buildpy]\nbuilderr = "x"\n')
    with pytest.raises(UsageError, match="builderr"):
        config.with_pyproject(BuildOptions(source=tmp_path), frozenset())


def test_pyproject_bad_toml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.buildpy\n")
    with pytest.raises(UsageError, match=r"pyproject\.toml"):
        config.with_pyproject(BuildOptions(source=tmp_path), frozenset())


def test_git_describe_parses_log() -> None:
    def fake(args: Sequence[str], cwd: Path) -> str | None:
        if args[0] == "log":
            return "abc\x00Ann <a@x>\x002026-01-01T00:00:00+00:00\x00subject line\n"
        return "HEAD\n"  # detached

    info = gitinfo.describe(Path("."), run=fake)
    assert info == gitinfo.GitInfo("abc", "Ann <a@x>", "2026-01-01T00:00:00+00:00", "subject line")


def test_git_describe_outside_a_checkout(tmp_path: Path) -> None:
    assert gitinfo.describe(tmp_path / "nowhere") is None


def test_git_is_not_started_where_it_could_find_no_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[Sequence[str]] = []

    def run(args: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        started.append(args)
        return subprocess.CompletedProcess(args, 128, "", "fatal: not a git repository")

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.delenv("GIT_DIR", raising=False)
    assert gitinfo.run_git(["log"], tmp_path) is None and started == []
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    (tmp_path / "repo" / "app").mkdir()
    assert gitinfo.run_git(["log"], tmp_path / "repo" / "app") is None and len(started) == 1
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    assert gitinfo.run_git(["log"], tmp_path) is None and len(started) == 2


def test_connect_prefers_container_host() -> None:
    import http.server
    import threading

    class Ping(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/_ping" else 404)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Ping)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"tcp://127.0.0.1:{server.server_address[1]}"
    try:
        with service.connect({"CONTAINER_HOST": host}, ping=lambda p: False) as url:
            assert url == host
    finally:
        server.shutdown()
        server.server_close()


def test_connect_refuses_a_tcp_host_that_does_not_answer() -> None:
    with (
        pytest.raises(EngineUnavailable, match=r"CONTAINER_HOST=tcp://127\.0\.0\.1:1") as info,
        service.connect({"CONTAINER_HOST": "tcp://127.0.0.1:1"}),
    ):
        pass
    assert info.value.exit_code == 5 and info.value.hint


def test_connect_refuses_a_silent_container_host() -> None:
    with (
        pytest.raises(EngineUnavailable, match="CONTAINER_HOST"),
        service.connect({"CONTAINER_HOST": "unix:///nowhere.sock"}, ping=lambda p: False),
    ):
        pass


def test_connect_uses_the_first_socket_that_answers() -> None:
    answered = {"/b.sock"}
    ran: list[str] = []
    with service.connect(
        {},
        candidates=["/a.sock", "/b.sock"],
        ping=lambda p: p in answered,
        meanwhile=lambda: ran.append("meanwhile"),
    ) as url:
        assert url == "unix:///b.sock"
        assert ran == ["meanwhile"]


# A fake `podman system service`: answers every request on its socket with 200 OK.
_SERVE = """\
server = socket.socket(socket.AF_UNIX)
server.bind(sys.argv[-1].removeprefix("unix://"))
server.listen()
while True:
    conn, _ = server.accept()
    conn.recv(1024)
    conn.sendall(b"HTTP/1.0 200 OK\\r\\n\\r\\nOK")
    conn.close()
"""


def _fake_podman(directory: Path, before_serving: str) -> str:
    fake = directory / "podman"
    fake.write_text(f"#!{sys.executable}\nimport os, socket, sys, time\n{before_serving}{_SERVE}")
    fake.chmod(0o755)
    return str(fake)


# It answers only once the caller's meanwhile ran.
_MEANWHILE_FIRST = """\
while not os.path.exists(os.environ["MEANWHILE_MARK"]):
    time.sleep(0.01)
"""


def test_meanwhile_runs_while_the_private_service_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller's start-up work (importing the client) runs after the service's process
    is started and before buildpy waits for its socket: the fake service answers only
    once that work has run, so waiting first would time out."""
    mark = tmp_path / "meanwhile-ran"
    fake = _fake_podman(tmp_path, _MEANWHILE_FIRST)
    monkeypatch.setenv("MEANWHILE_MARK", str(mark))
    monkeypatch.setattr(service, "START_TIMEOUT", 5.0)
    started: list[bool] = []

    def meanwhile() -> None:
        started.append(True)
        mark.touch()

    with service.connect(
        {}, candidates=[], podman=fake, ping=lambda p: False, meanwhile=meanwhile
    ) as url:
        assert url.startswith("unix://") and service.ping_unix(url.removeprefix("unix://"))
    assert started == [True]


# Like rootless Podman making the user's namespace: the first process forks the one that
# serves and dies of SIGTERM without passing it on.
_FORKING = """\
if os.fork():
    os.wait()
    sys.exit(0)
open(os.environ["SERVER_PID"], "w").write(str(os.getpid()))
"""


def test_stopping_the_private_service_ends_the_process_that_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _fake_podman(tmp_path, _FORKING)
    pidfile = tmp_path / "server.pid"
    monkeypatch.setenv("SERVER_PID", str(pidfile))
    monkeypatch.setattr(service, "START_TIMEOUT", 5.0)
    with service.connect({}, candidates=[], podman=fake, ping=lambda p: False):
        server = int(pidfile.read_text())
        assert _running(server)
    deadline = time.monotonic() + 5
    while _running(server) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _running(server)


def _running(pid: int) -> bool:
    """Whether a process runs (not a zombie: the server's parent, gone, never reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


SSH_HOST = "ssh://root@127.0.0.1:2222/run/podman/podman.sock"


def test_ssh_needs_the_client_and_an_existing_key(tmp_path: Path) -> None:
    with (
        pytest.raises(EngineUnavailable, match="no `no-such-ssh` on PATH"),
        service.ssh_tunnel(SSH_HOST, None, ssh="no-such-ssh"),
    ):
        pass
    env = {"CONTAINER_HOST": SSH_HOST, "CONTAINER_SSHKEY": str(tmp_path / "absent")}
    with pytest.raises(EngineUnavailable, match="CONTAINER_SSHKEY") as info, service.connect(env):
        pass
    assert info.value.hint


def test_a_failed_ssh_login_says_what_ssh_said(tmp_path: Path) -> None:
    """The tunnel's ssh is run with the key and the forward; its last words reach the error."""
    key = tmp_path / "id"
    key.write_text("key\n")
    args = tmp_path / "args"
    fake = tmp_path / "fake-ssh"
    fake.write_text(
        f'#!/bin/sh\necho "$@" > {args}\necho "Permission denied (publickey)." >&2\nexit 255\n'
    )
    fake.chmod(0o755)
    with (
        pytest.raises(EngineUnavailable, match=r"status 255: Permission denied") as info,
        service.ssh_tunnel(SSH_HOST, str(key), ssh=str(fake)),
    ):
        pass
    assert "known_hosts" in (info.value.hint or "")
    called = args.read_text().split()
    assert called[:2] == ["-N", "-o"] and "BatchMode=yes" in called
    assert called[called.index("-i") + 1] == str(key)
    assert called[-2].endswith("/podman.sock:/run/podman/podman.sock")
    assert called[-1] == "ssh://root@127.0.0.1:2222"
    assert not Path(called[-2].split(":")[0]).parent.exists()  # the temporary directory went


def test_connect_without_podman_says_how_to_install() -> None:
    with (
        pytest.raises(EngineUnavailable, match="not installed") as info,
        service.connect({}, candidates=[], podman="no-such-podman-binary", ping=lambda p: False),
    ):
        pass
    assert info.value.hint and "apt-get install podman" in info.value.hint


def test_default_sockets() -> None:
    assert service.default_sockets({}, 0) == ["/run/podman/podman.sock"]
    assert service.default_sockets({"XDG_RUNTIME_DIR": "/run/user/5"}, 5) == [
        "/run/user/5/podman/podman.sock"
    ]


def test_default_sockets_without_a_login_session() -> None:
    """su, runuser and CI shell executors leave XDG_RUNTIME_DIR unset: Podman then puts its
    socket in /run/user/UID if that exists and is the user's, else in $TMPDIR/podman-run-UID."""
    assert service.default_sockets({}, 7) == [
        "/run/user/7/podman/podman.sock",
        "/tmp/podman-run-7/podman/podman.sock",
    ]
    assert service.default_sockets({"TMPDIR": "/var/tmp/u7"}, 7)[1] == (
        "/var/tmp/u7/podman-run-7/podman/podman.sock"
    )


def test_a_socket_under_a_directory_others_control_is_not_trusted(tmp_path: Path) -> None:
    runtime = tmp_path / "podman-run-7"
    (runtime / "podman").mkdir(parents=True)
    runtime.chmod(0o700)
    sock = str(runtime / "podman" / "podman.sock")
    uid = os.getuid()
    assert service.runtime_dir_is_private(sock, uid)
    assert not service.runtime_dir_is_private(sock, uid + 1)
    runtime.chmod(0o777)
    assert not service.runtime_dir_is_private(sock, uid)
    assert not service.runtime_dir_is_private(str(tmp_path / "gone/podman/podman.sock"), uid)


def test_connect_skips_standard_sockets_others_could_plant(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    (runtime / "podman").mkdir(parents=True)
    runtime.chmod(0o777)
    asked: list[str] = []

    def ping(path: str) -> bool:
        asked.append(path)
        return True

    with (
        pytest.raises(EngineUnavailable, match="not installed"),
        service.connect(
            {"XDG_RUNTIME_DIR": str(runtime)},
            uid=os.getuid() + 1,
            podman="no-such-podman-binary",
            ping=ping,
        ),
    ):
        pass
    assert asked == []


def test_ping_of_a_missing_socket_is_false(tmp_path: Path) -> None:
    assert service.ping_unix(str(tmp_path / "none.sock")) is False


def test_builder_context_is_deterministic_and_digest_tracks_inputs() -> None:
    root = builders.data_root()
    one, two = builders.context_tar(root), builders.context_tar(root)
    assert one == two
    builder = builders.BUILDERS["python-311"]
    base = builders.digest(one, builder, "sha256:base")
    assert base == builders.digest(two, builder, "sha256:base")
    assert base != builders.digest(one, builder, "sha256:other-base")
    assert base != builders.digest(one + b"x", builder, "sha256:base")


def test_builder_lookup_accepts_tags_and_rejects_unknown() -> None:
    assert builders.lookup("localhost/buildpy/python-311").name == "python-311"
    with pytest.raises(UsageError, match="unknown builder") as info:
        builders.lookup("python-27")
    assert info.value.hint and "python-311" in info.value.hint


def test_the_builder_prefix_names_another_set_of_builders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(config.PREFIX_VARIABLE, "localhost/branch/")
    assert builders.BUILDERS["python-311"].tag == "localhost/branch/python-311"
    assert builders.BUILDERS["python-311"].base == "localhost/buildpy/base-bookworm"
    assert config.default_builder() == "localhost/branch/python-311"
    assert config.BuildOptions(source=Path(".")).builder == config.DEFAULT_BUILDER  # pure
    monkeypatch.delenv(config.PREFIX_VARIABLE)
    assert config.default_builder() == "localhost/buildpy/python-311"


@given(st.text(alphabet="abc:/5", min_size=1, max_size=20))
def test_split_tag_round_trips(ref: str) -> None:
    name, tag = image.split_tag(ref)
    assert ref in (f"{name}:{tag}", name)


def test_cache_listing_and_prune() -> None:
    from fakes import FakeEngine

    from buildpy import cache
    from buildpy.engine import ImageInfo

    engine = FakeEngine()
    deps = ImageInfo(id="d1", ref="deps", labels={cache.KEY_LABEL: "k"})
    engine.stored[f"{cache.DEPENDENCY_REPOSITORY}:k"] = deps
    engine.stored[cache.growth_tag("f")] = deps  # a second name: removal by ID is refused
    used = ImageInfo(id="d2", ref="used", labels={cache.KEY_LABEL: "u"})
    engine.stored[f"{cache.DEPENDENCY_REPOSITORY}:u"] = used
    engine.stored["localhost/app:latest"] = ImageInfo(id="a1", ref="app", labels=deps.labels)
    cache.downloads(engine)
    found = cache.listing(engine)
    assert sorted(i.id for i in found.images) == ["d1", "d2"]
    assert [name for name, _ in found.volumes] == [cache.DOWNLOADS_VOLUME]
    engine.in_use.update({cache.DOWNLOADS_VOLUME, "d2"})
    removed, kept = cache.prune(engine)
    assert engine.removed_images == [cache.growth_tag("f"), f"{cache.DEPENDENCY_REPOSITORY}:k"]
    assert [i.id for i in removed.images] == ["d1"] and removed.volumes == ()
    assert [i.id for i in kept.images] == ["d2"]  # a running build's layer stays
    assert [name for name, _ in kept.volumes] == [cache.DOWNLOADS_VOLUME]
    assert [i.id for i in cache.listing(engine).images] == ["d2"]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("crun: cgroups in hybrid mode not supported, drop all controllers", 'runtime = "runc"'),
        ("setrlimit `RLIMIT_NOFILE`: Operation not permitted", "default_ulimits"),
        ("unable to find network with name or ID nosuchnet: network not found", "network ls"),
        ("image not known", None),
    ],
)
def test_host_setting_hints(message: str, expected: str | None) -> None:
    from buildpy.podman import host_setting_hint

    hint = host_setting_hint(message)
    assert (hint is None) if expected is None else (hint is not None and expected in hint)


class _Trickle:
    """A stream that hands out at most ``step`` bytes per read, like a slow socket."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._step = data, step

    def read(self, size: int = -1) -> bytes:
        size = self._step if size < 0 else min(size, self._step)
        chunk, self._data = self._data[:size], self._data[size:]
        return chunk


def _frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


@pytest.mark.parametrize("step", [1, 3, 1 << 16])
def test_attach_stream_frames_are_unwrapped_whatever_the_read_sizes(step: int) -> None:
    from buildpy.podman import _frames

    data = _frame(1, b"out\n") + _frame(2, b"err\n") + _frame(1, b"x" * 70000)
    assert b"".join(_frames(_Trickle(data, step))) == b"out\nerr\n" + b"x" * 70000


def test_attach_stream_without_headers_is_passed_through() -> None:
    from buildpy.podman import _frames

    assert b"".join(_frames(_Trickle(b"plain terminal output\n", 5))) == b"plain terminal output\n"
    assert b"".join(_frames(_Trickle(b"ok\n", 5))) == b"ok\n"  # shorter than a header


def test_attach_stream_cut_short_ends_quietly() -> None:
    from buildpy.podman import _frames

    data = _frame(1, b"complete\n") + _frame(1, b"cut")[:-1]
    assert b"".join(_frames(_Trickle(data, 4))) == b"complete\ncu"


def test_image_times_are_shown_as_iso_8601() -> None:
    from buildpy.podman import _timestamp

    assert _timestamp(1795665876) == "2026-11-26T04:04:36+00:00"
    assert _timestamp("2026-11-26T03:24:36Z") == "2026-11-26T03:24:36Z"
    assert _timestamp(None) == ""


def test_a_private_service_keeps_its_large_temporary_files_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Podman's exports and pulls go through TMPDIR; buildpy removes it with the service."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")  # rootless Podman ignores TMPDIR then
    scratch = service._scratch_dir()
    assert scratch is not None and scratch.parent == tmp_path and scratch.is_dir()
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    if os.getuid() != 0:  # rootless without XDG_RUNTIME_DIR: TMPDIR decides Podman's run dir
        assert service._scratch_dir() is None


def test_a_lost_connection_podman_py_wrapped_is_still_a_lost_connection() -> None:
    from podman.errors import APIError

    from buildpy.podman import _translated

    def fail() -> None:
        with _translated("commit the working container"):
            try:
                raise ConnectionRefusedError(111, "Connection refused")
            except OSError as exc:  # what podman-py's client does with it
                raise APIError("http://podman/commit", explanation="POST operation failed") from exc

    with pytest.raises(EngineUnavailable, match="lost the connection to Podman while trying"):
        fail()


class _Refusing:
    """podman-py's API client, refusing to remove a container ``times`` times first."""

    def __init__(self, times: int, message: str) -> None:
        self.times, self.message, self.calls = times, message, 0

    def delete(self, path: str, params: object = None) -> _Refusing:
        self.calls += 1
        return self

    def close(self) -> None:
        pass

    def raise_for_status(self) -> None:
        from podman.errors import APIError

        if self.calls <= self.times:
            raise APIError("500", explanation=self.message)


@pytest.mark.parametrize(
    ("times", "message", "calls", "fails"),
    [
        (1, "container state improper: stopped", 2, False),  # asked again, removed
        (9, "container state improper: stopped", 4, True),  # gives up after 3 more tries
        (1, "no such thing went wrong", 1, True),  # any other refusal is at once an error
    ],
)
def test_a_container_between_states_is_asked_to_go_again(
    times: int, message: str, calls: int, fails: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from buildpy import podman
    from buildpy.errors import EngineError

    monkeypatch.setattr(podman, "_REMOVE_RETRIES", (0.0, 0.0, 0.0), raising=False)
    engine = podman.PodmanEngine("unix:///nonexistent.sock")
    refusing = _Refusing(times, message)
    monkeypatch.setattr(engine._client, "api", refusing)
    if fails:
        with pytest.raises(EngineError):
            engine.remove("c1")
    else:
        engine.remove("c1")
    assert refusing.calls == calls
    engine.close()


def test_an_expected_image_is_inspected_once_ahead_then_asked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    from buildpy import podman
    from buildpy.engine import ImageInfo
    from buildpy.errors import EngineError

    engine = podman.PodmanEngine("unix:///nonexistent.sock")
    asked: list[tuple[str, str]] = []

    def inspect(ref: str) -> ImageInfo | None:
        asked.append((ref, threading.current_thread().name))
        if ref == "broken":
            raise EngineError("Podman could not inspect image broken: no")
        return ImageInfo(id=f"id-{len(asked)}", ref=ref)

    monkeypatch.setattr(engine, "_inspect", inspect)
    engine.expect_image("b")
    engine.expect_image("broken")
    ahead = engine.find_image("b")
    assert ahead is not None and ahead.ref == "b"
    with pytest.raises(EngineError, match="inspect image broken"):  # its error, when asked
        engine.find_image("broken")
    assert {name for _, name in asked} == {"buildpy-expect"}  # both asked on their threads
    again = engine.find_image("b")  # the answer ahead is taken once; then asked anew
    assert again is not None and again.id != ahead.id and asked[-1] == ("b", "MainThread")
    engine.close()
