"""The only module that imports podman-py: an ``Engine`` over Podman's REST API.

podman-py's sharp edges are handled here and nowhere else: ``put_archive``
returns False instead of raising, ``APIError`` is not a ``PodmanError``,
connection failures surface as ``requests`` exceptions, and its loose
``**kwargs`` stay inside this file. Every error leaves as a ``buildpy.errors``
type with a hint.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, BinaryIO, cast

import requests
import urllib3
from podman import PodmanClient
from podman.errors import APIError, BuildError, ImageNotFound, NotFound, PodmanError

from buildpy.background import Running
from buildpy.engine import CommitSpec, ContainerSpec, ImageInfo, ImageSummary, Progress
from buildpy.errors import (
    BuildpyError,
    EngineError,
    EngineUnavailable,
    PublishFailed,
    PullFailed,
)
from buildpy.image import split_tag
from buildpy.registry import registry_hint

# Messages Podman gives on hosts that need a setting changed, and what to change.
# `buildpy doctor` knows each of these causes too (doctor.cause), and checks the whole host.
_DOCTOR = " (run `buildpy doctor` for a full check)"
_HOST_SETTING_HINTS = (
    (
        "cgroups in hybrid mode not supported",
        'the OCI runtime (crun) cannot run on this host\'s hybrid cgroups: set runtime = "runc"'
        " under [engine] in /etc/containers/containers.conf (or"
        " ~/.config/containers/containers.conf when rootless) and install runc" + _DOCTOR,
    ),
    (
        "RLIMIT_NOFILE",
        "Podman's default open-files limit is above this host's hard limit: set"
        ' default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"] under [containers]'
        " in containers.conf (values at or below `ulimit -Hn` and `ulimit -Hu`)" + _DOCTOR,
    ),
    (
        "error setting rlimit",  # runc's words for the same ("error setting rlimit type 7")
        "Podman's default ulimits are above this host's hard limits: set"
        ' default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"] under [containers]'
        " in containers.conf (values at or below `ulimit -Hn` and `ulimit -Hu`)" + _DOCTOR,
    ),
    (
        "RLIMIT_NPROC",
        "Podman's default process limit is above this host's hard limit: set"
        ' default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"] under [containers]'
        " in containers.conf" + _DOCTOR,
    ),
    (
        "runroot must be set",
        "the storage.conf Podman reads ($CONTAINERS_STORAGE_CONF, or"
        " ~/.config/containers/storage.conf when rootless) replaces Podman's defaults and sets"
        " no runroot: add runroot and graphroot under [storage] (rootless defaults:"
        ' runroot = "$XDG_RUNTIME_DIR/containers", graphroot ='
        ' "~/.local/share/containers/storage"; absolute paths), or remove the file' + _DOCTOR,
    ),
)
# Seconds to wait before asking again to remove a container in a transitional state.
_REMOVE_RETRIES = (0.1, 0.3, 1.0)

# Messages about the build's own options, and what to give instead.
_NO_SUCH_NETWORK = (
    "--network names a network Podman does not have: use host, none, bridge (Podman's"
    " default), or one `podman network ls` lists"
)
_OPTION_HINTS = (
    ("network not found", _NO_SUCH_NETWORK),
    ('invalid network "', _NO_SUCH_NETWORK),  # Podman 4.3's libpod create
)


def _api_message(exc: BaseException) -> str:
    """The service's own words for an APIError (podman-py's str() drops them)."""
    explanation = getattr(exc, "explanation", None)
    if explanation:
        return str(explanation)
    response = getattr(exc, "response", None)
    if response is not None:
        try:
            return str(response.json().get("message", response.text))
        except ValueError:
            return str(response.text)
    return str(exc)


def host_setting_hint(message: str) -> str | None:
    """A hint for a host setting Podman needs, or an option it refused, from ``message``."""
    for needle, hint in (*_HOST_SETTING_HINTS, *_OPTION_HINTS):
        if needle in message:
            return hint
    return None


def _lost(action: str, exc: BaseException) -> EngineUnavailable:
    return EngineUnavailable(
        f"lost the connection to Podman while trying to {action}: {exc}",
        "check that the Podman service is running (`podman system service`)"
        " or unset CONTAINER_HOST to let buildpy start a private one",
    )


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn podman-py and requests failures into buildpy errors."""
    try:
        yield
    except (
        requests.exceptions.ConnectionError,
        requests.exceptions.ChunkedEncodingError,  # the service went away mid-stream
        urllib3.exceptions.HTTPError,
    ) as exc:
        raise _lost(action, exc) from exc
    except (APIError, PodmanError) as exc:
        if isinstance(exc.__cause__, OSError):  # podman-py's "POST operation failed"
            raise _lost(action, exc.__cause__) from exc
        message = _api_message(exc)
        raise EngineError(
            f"Podman could not {action}: {message}", host_setting_hint(message)
        ) from exc


class PodmanEngine:
    """An ``Engine`` driving a Podman service at ``base_url`` (unix://, tcp:// or ssh://)."""

    def __init__(self, base_url: str, timeout: float | None = None) -> None:
        self._client = PodmanClient(base_url=base_url, timeout=timeout)
        self._expected: dict[str, Running[ImageInfo | None]] = {}

    def __enter__(self) -> PodmanEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def expect_image(self, ref: str) -> None:
        """Inspect ``ref`` now, on a thread of its own: the next ``find_image(ref)`` takes
        that answer (once) instead of asking. For a build's first question, the builder,
        asked while the rest of buildpy is still being imported."""
        self._expected[ref] = Running(lambda: self._inspect(ref), name="buildpy-expect")

    def find_image(self, ref: str) -> ImageInfo | None:
        expected = self._expected.pop(ref, None)
        return expected.result() if expected is not None else self._inspect(ref)

    def _inspect(self, ref: str) -> ImageInfo | None:
        try:
            with _translated(f"inspect image {ref}"):
                attrs: dict[str, Any] = self._client.images.get(ref).attrs
        except EngineError as exc:
            if _not_found(exc.__cause__):
                return None
            raise
        config = attrs.get("Config") or {}
        env = dict(_split_env(item) for item in config.get("Env") or [])
        return ImageInfo(
            id=str(attrs["Id"]),
            ref=ref,
            user=str(config.get("User") or ""),
            workdir=str(config.get("WorkingDir") or ""),
            entrypoint=tuple(config.get("Entrypoint") or ()),
            cmd=tuple(config.get("Cmd") or ()),
            env=env,
            labels=dict(config.get("Labels") or attrs.get("Labels") or {}),
            names=tuple(attrs.get("RepoTags") or ()),
            layers=tuple((attrs.get("RootFS") or {}).get("Layers") or ()),
            size=int(attrs.get("Size") or 0),
        )

    def containers(self, prefix: str) -> list[tuple[str, str]]:
        with _translated("list containers"):
            found = self._client.containers.list(all=True, filters={"name": prefix})
        named = [(str(c.id), str(c.name)) for c in found]
        return [(cid, name) for cid, name in named if name.startswith(prefix)]

    def create(self, spec: ContainerSpec) -> str:
        """libpod's create, with the payload written here: podman-py's ``create`` cannot
        pass ``unsetenv`` (nor would it return without inspecting the container again)."""
        with _translated(f"create a container from {spec.image}"):
            response = self._client.api.post(
                "/containers/create",
                data=json.dumps(create_payload(spec)),
                headers={"content-type": "application/json"},
            )
            response.raise_for_status()
            return str(response.json()["Id"])

    def create_secret(self, name: str, data: bytes) -> None:
        # The libpod endpoint: the bytes are the body, so they travel over ssh:// as well.
        with _translated(f"create the build secret {name}"):
            self._client.api.post(
                "/secrets/create", params={"name": name}, data=data
            ).raise_for_status()

    def remove_secret(self, name: str) -> bool:
        return _removed(
            f"secret {name}",
            lambda: self._client.api.delete(f"/secrets/{name}").raise_for_status(),
            force=True,
        )

    def upload(self, container: str, path: str, archive: Iterable[bytes]) -> None:
        # An iterator, never a list: requests would send a list of chunks as form fields.
        with _translated(f"copy the source into the container at {path}"):
            ok = self._container(container).put_archive(path, data=iter(archive))
        if not ok:
            raise EngineError(f"Podman refused the source archive for {path}")

    def read_file(self, container: str, path: str) -> bytes | None:
        buffer = io.BytesIO()
        return buffer.getvalue() if self.copy_file(container, path, buffer) else None

    def copy_file(self, container: str, path: str, dest: BinaryIO) -> bool:
        """Stream one regular file out of the container into ``dest``; False when missing."""
        try:
            with _translated(f"read {path} from the container"):
                chunks, _ = self._container(container).get_archive(path, chunk_size=1 << 20)
                with tarfile.open(fileobj=_ChunkReader(chunks), mode="r|") as archive:
                    for member in archive:
                        handle = archive.extractfile(member) if member.isfile() else None
                        if handle is not None:
                            shutil.copyfileobj(handle, dest, 1 << 20)
                            return True
        except EngineError as exc:
            if _not_found(exc.__cause__):
                return False
            raise
        return False

    def archive(self, container: str, path: str, dest: BinaryIO) -> bool:
        try:
            with _translated(f"read {path} from the container"):
                chunks, _ = self._container(container).get_archive(path, chunk_size=1 << 20)
                for chunk in chunks:
                    dest.write(chunk)
        except EngineError as exc:
            if _not_found(exc.__cause__):
                return False
            raise
        return True

    def run(self, container: str, output: Callable[[bytes], object]) -> int:
        """Attach, start, pass the output on as it comes, return the exit status.

        Attaching, not following the logs: Podman's log follower polls its file every
        250 ms, so output arrived late and the end of a run was noticed up to half a
        second after the process had exited. The wait is asked for alongside the
        stream; asked only once the stream has ended, it answers about 0.2 s later.
        """
        with _translated("attach to the working container"):
            response = self._client.api.post(
                f"/containers/{container}/attach",
                params={"stream": True, "stdout": True, "stderr": True, "logs": True},
                stream=True,
            )
            response.raise_for_status()
        try:
            with _translated("start the working container"):
                self._container(container).start()
            # after Ctrl-C the build removes the container, which ends the wait
            waiter = Running(lambda: self._wait(container), name="buildpy-wait")
            with _translated("follow the build output"):
                for chunk in _frames(response.raw):
                    output(chunk)
            return waiter.result()
        except (EngineError, EngineUnavailable) as exc:
            if not self._answers():
                raise EngineUnavailable(
                    "the Podman service stopped answering while the working container ran",
                    "find out why it stopped (`journalctl`, out of memory?) and build again;"
                    " the next build removes the container it left",
                ) from exc
            raise
        finally:
            response.close()

    def _answers(self) -> bool:
        """Whether the service still answers a ping (within two seconds)."""
        try:
            return bool(self._client.api.get("/_ping", timeout=2).ok)
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError):
            return False

    def _wait(self, container: str) -> int:
        with _translated("wait for the working container"):
            ctr = self._container(container)
            return int(ctr.wait(condition="exited", interval="10ms"))

    def commit(self, container: str, spec: CommitSpec) -> str:
        """libpod's commit, as podman-py sends it, without podman-py's inspect of the new
        image afterwards (a round trip the build does not need: it asks for the image's
        size itself, while the container is being removed)."""
        params = {"container": container, "repo": spec.repository, "tag": spec.tag}
        with _translated("commit the working container"):
            response = self._client.api.post(
                "/commit", params={**params, "changes": list(spec.changes)}
            )
            response.raise_for_status()
            return str(response.json()["Id"])

    def remove(self, container: str) -> None:
        """Kill and remove at once: podman-py's force removal waits out the stop timeout
        (10 s here for an assemble that ignores SIGTERM; 0.2 s with timeout=0).

        A container caught between states (the upload it was receiving cut short) can
        refuse once with "container state improper"; it is asked again, a little later.
        """
        for delay in (*_REMOVE_RETRIES, None):
            try:
                with _translated("remove the working container"):
                    self._client.api.delete(
                        f"/containers/{container}", params={"force": True, "timeout": 0}
                    ).raise_for_status()
                return
            except EngineError as exc:
                if _not_found(exc.__cause__):
                    return
                if delay is None or "state improper" not in exc.message:
                    raise
                time.sleep(delay)

    def pull(self, ref: str, tls_verify: bool | None, progress: Progress) -> str:
        params = _tls_param({"reference": ref, "policy": "always"}, tls_verify)
        with _registry("pull", ref, PullFailed):
            found = self._follow("/images/pull", params, progress).get("id")
            if not found:
                raise _Refused("Podman did not say which image it pulled")
            return str(found)

    def push(self, ref: str, tls_verify: bool | None, progress: Progress) -> None:
        # quiet=false: progress as it comes, and a registry's refusal as an error line
        params = _tls_param({"quiet": False}, tls_verify)
        with _registry("push", ref, PublishFailed):
            self._follow(f"/images/{_quoted(ref)}/push", params, progress)

    def save_image(self, ref: str, archive_format: str, dest: BinaryIO) -> None:
        """libpod's export: the service writes the whole archive to its own temporary
        file first, so a failure is an error status, never half an archive."""
        with _translated(f"save {ref} as {archive_format}"):
            response = self._client.api.get(
                f"/images/{_quoted(ref)}/get", params={"format": archive_format}, stream=True
            )
            try:
                response.raise_for_status()
                for chunk in response.iter_content(1 << 20):
                    dest.write(chunk)
            finally:
                response.close()

    def _follow(self, path: str, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """POST and follow libpod's JSON lines (``stream``, ``error``, a result); the
        status is 200 before the registry is asked, so its refusal comes as a line."""
        response = self._client.api.post(path, params=params, stream=True)
        try:
            response.raise_for_status()
            last: dict[str, Any] = {}
            for line in response.iter_lines():
                item = _json_line(line)
                if item.get("error"):
                    raise _Refused(str(item["error"]))
                if item.get("stream"):
                    progress(str(item["stream"]).rstrip())
                last = item or last
            return last
        finally:
            response.close()

    def images(self, repository: str) -> list[ImageSummary]:
        found = self._list_images(repository)
        return [
            ImageSummary(
                id=str(item.id),
                tags=tuple(item.attrs.get("RepoTags") or item.attrs.get("Names") or ()),
                size=int(item.attrs.get("Size") or 0),
                created=_timestamp(item.attrs.get("Created")),
                labels=dict(item.attrs.get("Labels") or {}),
                parent=str(item.attrs.get("ParentId") or ""),
            )
            for item in found
        ]

    def _list_images(self, repository: str, tries: int = 3) -> list[Any]:
        """Podman 4.3 fails a whole listing when an image goes while it lists (another
        build's removal): that is asked again, a few times."""
        for attempt in range(tries):
            try:
                with _translated("list images"):
                    return list(self._client.images.list(filters={"reference": repository}))
            except EngineError as exc:
                if "image not known" not in exc.message or attempt == tries - 1:
                    raise
        return []

    def tag(self, image: str, ref: str) -> None:
        repository, tag = split_tag(ref)
        with _translated(f"tag {image[:12]} as {ref}"):
            self._client.api.post(
                f"/images/{image}/tag", params={"repo": repository, "tag": tag}
            ).raise_for_status()

    def remove_image(self, ref: str, force: bool = True) -> bool:
        return _removed(f"image {ref}", lambda: self._client.images.remove(ref, force=force), force)

    def ensure_volume(self, name: str, labels: Mapping[str, str]) -> bool:
        with _translated(f"create volume {name}"):
            if self._client.volumes.exists(name):
                return False
            self._client.volumes.create(name, labels=dict(labels))
            return True

    def volumes(self, label: str) -> list[tuple[str, str]]:
        with _translated("list volumes"):
            found = self._client.volumes.list(filters={"label": label})
        return [(str(v.name), str(v.attrs.get("Mountpoint", ""))) for v in found]

    def remove_volume(self, name: str, force: bool = True) -> bool:
        return _removed(
            f"volume {name}", lambda: self._client.volumes.remove(name, force=force), force
        )

    def build(
        self,
        context: bytes,
        containerfile: str,
        tag: str,
        args: Mapping[str, str],
        labels: Mapping[str, str],
    ) -> str:
        """Build an image from an in-memory context tar; return its ID."""
        with _translated(f"build {tag}"):
            try:
                built, _ = self._client.images.build(
                    fileobj=io.BytesIO(context),
                    custom_context=True,
                    dockerfile=containerfile,
                    tag=tag,
                    buildargs=dict(args),
                    labels=dict(labels),
                    rm=True,
                    forcerm=True,
                )
            except BuildError as exc:
                lines = [_build_line(item) for item in exc.build_log]
                tail = " | ".join(line for line in lines if line)[-2000:]
                raise EngineError(
                    f"building {tag} failed: {exc.msg}; last output: {tail}"
                ) from None
            return str(built.id)

    @contextmanager
    def image_archive(self, ref: str) -> Iterator[BinaryIO]:
        """``podman save`` as a stream (docker-archive: uncompressed layers named by diff ID).

        Failures while the caller reads the stream are translated too: the ``yield``
        is inside ``_translated``.
        """
        with _translated(f"save image {ref}"):
            response = self._client.api.get(
                f"/images/{ref}/get", params={"format": "docker-archive"}, stream=True
            )
            response.raise_for_status()
            try:
                yield cast(BinaryIO, response.raw)
            finally:
                response.close()

    def load_image(self, archive: BinaryIO) -> tuple[str, ...]:
        with _translated("load an image archive"):
            response = self._client.api.post("/images/load", data=archive)
            response.raise_for_status()
            return tuple(str(name) for name in response.json().get("Names") or ())

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call,unused-ignore]

    def _container(self, container: str) -> Any:
        """A podman-py handle for a container ID, without another inspect round trip."""
        return self._client.containers.prepare_model({"Id": container})


def create_payload(spec: ContainerSpec) -> dict[str, Any]:
    """libpod's SpecGenerator for a working container, as podman-py 5.8 renders its create
    arguments (empty values left out, so an empty entrypoint is the image's), plus
    ``unsetenv``: what Podman must not give the container (see ``ContainerSpec``), and
    ``volatile``: its overlay is mounted without syncs (``fsync=volatile``), as buildah
    mounts its build containers. Otherwise each unmount (after every copy into a
    container that is not running, and when it stops) syncs the host's whole file
    system: about 0.5 s after a GiB, 0.04-0.11 s after a dependency layer's commit."""
    payload: dict[str, Any] = {
        "image": spec.image,
        "command": list(spec.command),
        "env": dict(spec.env),
        "labels": dict(spec.labels),
        "mounts": [
            {
                "type": "bind",
                "source": m.source,
                "destination": m.target,
                "options": ["ro"] if m.read_only else [],
            }
            for m in spec.mounts
        ],
        "secrets": [
            {"source": m.name, "target": m.target, "uid": m.uid, "gid": m.gid, "mode": m.mode}
            for m in spec.secrets
        ],
        "volumes": [
            {"Name": v.name, "Dest": v.target, "Options": ["ro" if v.read_only else "rw"]}
            for v in spec.volumes
        ],
        "unsetenv": list(spec.unset_env),
        "user": spec.user,
        "name": spec.name,
        "volatile": True,
    }
    if spec.network:
        kind, sep, path = spec.network.partition(":")
        netns = {"nsmode": "path", "value": path} if sep and kind == "ns" else None
        payload["netns"] = netns or {"nsmode": spec.network}
    return {key: value for key, value in payload.items() if value}


class _Refused(Exception):
    """A registry's (or Podman's) refusal, given as an error line of a pull or push."""


@contextmanager
def _registry(action: str, ref: str, failure: type[BuildpyError]) -> Iterator[None]:
    """A pull or push: its failures as ``failure``, with a hint matched to the
    registry's words; a lost connection to Podman stays ``EngineUnavailable``."""
    try:
        with _translated(f"{action} {ref}"):
            yield
    except _Refused as exc:
        message = str(exc)
    except EngineError as exc:
        message = _api_message(exc.__cause__) if exc.__cause__ is not None else exc.message
    else:
        return
    raise failure(f"could not {action} {ref}: {message}", registry_hint(message, ref))


def _tls_param(params: dict[str, Any], tls_verify: bool | None) -> dict[str, Any]:
    """``tlsVerify`` only when given: when it is absent, Podman follows registries.conf."""
    return params if tls_verify is None else {**params, "tlsVerify": tls_verify}


def _quoted(ref: str) -> str:
    """An image name as one path segment (names hold slashes, ports and digests)."""
    return urllib.parse.quote(ref, safe="")


def _json_line(line: bytes) -> dict[str, Any]:
    """One line of a libpod progress stream; plain text counts as progress."""
    text = line.decode(errors="replace").strip()
    if not text:
        return {}
    try:
        item = json.loads(text)
    except ValueError:
        return {"stream": text}
    return item if isinstance(item, dict) else {"stream": text}


def _timestamp(value: Any) -> str:
    """An image's creation time as ISO 8601 UTC (the listing gives Unix seconds)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, timezone.utc).isoformat(timespec="seconds")
    return str(value or "")


def _split_env(item: str) -> tuple[str, str]:
    key, _, value = item.partition("=")
    return key, value


def _build_line(raw: Any) -> str:
    """One line of podman-py's build log (JSON bytes) as text."""
    try:
        item = json.loads(raw)
    except (TypeError, ValueError):
        return str(raw).strip()
    return str(item.get("stream") or item.get("error") or "").strip()


def _not_found(exc: BaseException | None) -> bool:
    """podman-py has two unrelated not-found types; the status code is what counts."""
    if isinstance(exc, (NotFound, ImageNotFound)):
        return True
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None) == 404


def _frames(raw: Any) -> Iterator[bytes]:
    """Payloads of Podman's multiplexed attach stream (8-byte headers: stream, size)."""
    while True:
        header = _read_exact(raw, 8)
        if not header:
            return
        padding = header[1:4]  # three zero bytes in a frame header (fewer if cut short)
        if header[0] not in (0, 1, 2) or padding != bytes(len(padding)):
            # not multiplexed (a container with a terminal): the rest is plain output
            yield header
            while chunk := raw.read(1 << 16):
                yield bytes(chunk)
            return
        if len(header) < 8:
            return  # the stream broke off inside a header
        size = int.from_bytes(header[4:], "big")
        payload = _read_exact(raw, size)
        if payload:
            yield payload
        if len(payload) < size:
            return


def _read_exact(raw: Any, size: int) -> bytes:
    """``size`` bytes from a stream, fewer only at its end."""
    data = b""
    while len(data) < size:
        chunk = raw.read(size - len(data))
        if not chunk:
            break
        data += bytes(chunk)
    return data


class _ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (for tarfile's stream mode)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            try:
                self._rest = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._rest))
        buffer[:size] = self._rest[:size]
        self._rest = self._rest[size:]
        return size


def _removed(what: str, remove: Callable[[], object], force: bool) -> bool:
    """Run a removal: True when removed or already gone, False when in use (without force)."""
    try:
        with _translated(f"remove {what}"):
            remove()
    except EngineError as exc:
        if _not_found(exc.__cause__):
            return True
        status = getattr(getattr(exc.__cause__, "response", None), "status_code", None)
        if not force and status == 409:
            return False
        raise
    return True
