"""S2I incremental builds: artifacts of the previous image, restored into /tmp/artifacts.

With ``--incremental`` and a previous image under the same tag, its
``save-artifacts`` script runs in a throwaway container and writes a tar; the
tar goes into the new working container and is unpacked to ``/tmp/artifacts``
before assemble starts, where S2I assemble scripts expect it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from buildpy import log, source
from buildpy.container import BUILD_DIR, ArchiveFactory, Output, WorkingContainer
from buildpy.engine import ContainerSpec, Engine, ImageInfo
from buildpy.leftovers import container_name

_log = log.get(__name__)

ARTIFACTS_FILE = "artifacts.tar"
SAVED_AT = "/tmp/buildpy-artifacts.tar"


@contextmanager
def previous_artifacts(
    engine: Engine, previous: str, builder: ImageInfo, save_script: str, out: Output
) -> Iterator[ArchiveFactory | None]:
    """Run the previous image's save-artifacts; yield an upload of its tar (None if none)."""
    workdir = Path(tempfile.mkdtemp(prefix="buildpy-artifacts-"))
    try:
        saved = _save(engine, previous, builder, save_script, workdir / ARTIFACTS_FILE, out)
        yield _upload(workdir) if saved else None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _save(
    engine: Engine, previous: str, builder: ImageInfo, script: str, dest: Path, out: Output
) -> bool:
    spec = ContainerSpec(
        image=previous,
        command=("/bin/sh", "-c", f'exec "$0" > {SAVED_AT}', script),
        user=builder.user,
        name=container_name("artifacts"),
    )
    with WorkingContainer(engine, spec) as container:
        saved = container.assemble(out)
        if saved.status != 0:
            _log.warning("save-artifacts failed; building without artifacts", status=saved.status)
            return False
        with open(dest, "wb") as handle:
            found = engine.copy_file(container.id, SAVED_AT, handle)
    size = dest.stat().st_size if found else 0
    _log.info("artifacts saved from the previous image", bytes=size)
    return found and size > 0


def _upload(workdir: Path) -> ArchiveFactory:
    def archive(uid: int, gid: int) -> source.TarStream:
        rules = source.IgnoreRules.from_text("")
        layout = source.Layout(f"{BUILD_DIR}/in", uid, gid)
        return source.tar_stream(workdir, rules=rules, layout=layout)

    return archive
