"""One build's shared values, gathered once: what every step of ``build.run`` needs.

A ``BuildSession`` holds the plan, the engine, the inspected builder and its
scripts, the owner of uploaded files, where assemble's output goes, the reaper
that removes finished containers, and the mounts every working container gets
(the download cache, the CA bundle, the wheelhouse). Steps ask it for a working
container (``container``), for the build-only variables (``build_env``) and for
the variables the dependency layer's key sees (``keyed_env``), so a new mount or
a new build-only value is added here, in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from buildpy import cache, redact, scripts
from buildpy.container import WRAPPER, Output, Owner, Reaper, WorkingContainer, container_name
from buildpy.engine import ContainerSpec, Engine, ImageInfo, Mount, VolumeMount
from buildpy.errors import BuilderImageError
from buildpy.plan import BuildPlan

PHASE_VARIABLE = "BUILDPY_ASSEMBLE_PHASE"
# pip's defaults (5 retries with back-off, for every file) keep a build on an unreachable
# index busy for minutes: micropipenv retries each package in rounds. Set unless the user
# set them (-e, --env-file, .s2i/environment, --build-env).
FAIL_FAST = {"PIP_RETRIES": "1", "PIP_TIMEOUT": "10"}


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
        return cls(plan, engine, builder, chosen, Owner(builder), out, Reaper(engine), volumes)

    def __enter__(self) -> BuildSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.reaper.__exit__(*exc_info)

    def container(
        self,
        image: str,
        env: Mapping[str, str],
        labels: Mapping[str, str],
        user: str | None = None,
    ) -> WorkingContainer:
        """A working container that runs assemble from ``image``, with the session's mounts,
        as the builder's user unless ``user`` says otherwise.

        ``env`` and ``labels`` are committed with it; build-only values are uploaded
        (see ``build_env``), never put here.
        """
        spec = ContainerSpec(
            image=image,
            command=("/bin/sh", "-c", WRAPPER, "buildpy-assemble", self.scripts.assemble),
            user=self.builder.user if user is None else user,
            env=env,
            labels=labels,
            mounts=self.mounts(),
            volumes=self.volumes,
            network=self.plan.options.network,
            name=container_name(),
        )
        return WorkingContainer(self.engine, spec, self.owner, self.reaper)

    def mounts(self) -> tuple[Mount, ...]:
        """Bind mounts of every working container: the plan's (CA bundle), the wheelhouse."""
        wheelhouse = self.plan.wheelhouse
        return self.plan.mounts + (() if wheelhouse is None else (wheelhouse.mount(),))

    def build_env(self, phase: str | None, **more: str) -> dict[str, str]:
        """Build-only values for assemble: pip's fail-fast settings, cache locations, the
        plan's (CA bundle, index, ``--build-env``), the wheelhouse's, the phase, ``more``."""
        values = {k: v for k, v in FAIL_FAST.items() if k not in self.plan.image_env}
        values.update(cache.DOWNLOAD_VARIABLES if self.volumes else {"PIP_NO_CACHE_DIR": "1"})
        values.update(self.plan.build_env)
        if self.plan.wheelhouse is not None:
            values.update(self.plan.wheelhouse.variables())
        if phase is not None:
            values[PHASE_VARIABLE] = phase
        values.update(more)
        return values

    def keyed_env(self) -> dict[str, str]:
        """What the dependency layer's key is made from (``dependencies.install_variables``
        picks from it): the image's variables, the plan's build-only ones, the wheelhouse's
        (a fixed path inside the container: where the host keeps it does not count). Nor do
        the credentials in index URLs: a new token does not mean new dependencies."""
        wheelhouse = self.plan.wheelhouse
        extra = {} if wheelhouse is None else wheelhouse.variables()
        keyed = {**self.plan.image_env, **self.plan.build_env, **extra}
        return {key: redact.mask(value) for key, value in keyed.items()}


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
