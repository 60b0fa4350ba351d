"""One build's shared values, gathered once: what every step of ``build.run`` needs.

A ``BuildSession`` holds the plan, the engine, the inspected builder and its
scripts, the owner of uploaded files, where assemble's output goes, the reaper
that removes finished containers, and the mounts every working container gets
(the download cache, the CA bundle). Steps ask it for a working container
(``container``) and for the build-only variables (``build_env``), so a new
mount or a new build-only value is added here, in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from buildpy import cache, scripts
from buildpy.cache import DOWNLOAD_VARIABLES
from buildpy.container import WRAPPER, Output, Owner, Reaper, WorkingContainer
from buildpy.engine import ContainerSpec, Engine, ImageInfo, VolumeMount
from buildpy.errors import BuilderImageError
from buildpy.leftovers import container_name
from buildpy.plan import BuildPlan

PHASE_VARIABLE = "BUILDPY_ASSEMBLE_PHASE"


@dataclass
class BuildSession:
    """What the steps of one build share. Open it with ``with BuildSession.start(...)``."""

    plan: BuildPlan
    engine: Engine
    builder: ImageInfo
    scripts: scripts.Scripts
    owner: Owner
    out: Output
    reaper: Reaper
    volumes: tuple[VolumeMount, ...]

    @classmethod
    def start(cls, plan: BuildPlan, engine: Engine, out: Output) -> BuildSession:
        """Inspect the builder, choose the scripts, make sure the download cache exists."""
        builder = require_builder(engine, plan.options.builder)
        chosen = scripts.choose(builder.labels, set(plan.source_scripts), builder.ref)
        volumes = (cache.downloads(engine),) if plan.options.cache else ()
        reaper = Reaper(engine)
        reaper.sweep()
        return cls(plan, engine, builder, chosen, Owner(builder), out, reaper, volumes)

    def __enter__(self) -> BuildSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.reaper.__exit__(*exc_info)

    def container(
        self, image: str, env: Mapping[str, str], labels: Mapping[str, str]
    ) -> WorkingContainer:
        """A working container that runs assemble from ``image``, with the session's mounts.

        ``env`` and ``labels`` are committed with it; build-only values are uploaded
        (see ``build_env``), never put here.
        """
        spec = ContainerSpec(
            image=image,
            command=("/bin/sh", "-c", WRAPPER, "buildpy-assemble", self.scripts.assemble),
            user=self.builder.user,
            env=env,
            labels=labels,
            mounts=self.plan.mounts,
            volumes=self.volumes,
            network=self.plan.options.network,
            name=container_name(),
        )
        return WorkingContainer(self.engine, spec, self.owner, self.reaper)

    def build_env(self, phase: str | None, **more: str) -> dict[str, str]:
        """Build-only values for assemble: cache locations, the user's, the phase, ``more``."""
        values = buildpy_variables(bool(self.volumes))
        values.update(self.plan.build_env)
        if phase is not None:
            values[PHASE_VARIABLE] = phase
        values.update(more)
        return values


def buildpy_variables(cache: bool) -> dict[str, str]:
    """What buildpy itself gives assemble, build-only: the download cache's locations, or,
    without it, no pip cache at all."""
    return dict(DOWNLOAD_VARIABLES) if cache else {"PIP_NO_CACHE_DIR": "1"}


def require_builder(engine: Engine, ref: str, chooser: str = "--builder") -> ImageInfo:
    """The builder image, or ``BuilderImageError`` saying how to get it (``chooser``
    names the option or argument that picks another one)."""
    found = engine.find_image(ref)
    if found is None:
        raise BuilderImageError(
            f"builder image {ref} is not in local storage",
            "build it with `buildpy builder build` (or `make builders`), load it with"
            f" `podman load`, or name another one with {chooser}",
        )
    return found
