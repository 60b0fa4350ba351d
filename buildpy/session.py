"""One build's shared values, gathered once: what every step of ``build.run`` needs.

A ``BuildSession`` holds the plan, the engine, the inspected builder and its
scripts, the owner of uploaded files, where assemble's output goes, the reaper
that removes finished containers, and what every working container mounts
(the download cache volume, whose subdirectory is chosen by the build's package
index; the wheelhouse, as a volume of its own made when the
first container that runs needs it; the build-only files, as Podman secrets made when
the session's ``with`` block is entered; both removed when it ends). Steps ask it
for a working container (``container``) and for the build-only variables
(``build_env``), so a new mount or a new build-only value is added here, in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from buildpy import cache, registry, scripts
from buildpy.buildfiles import BuildSecrets
from buildpy.container import WRAPPER, Output, Owner, Reaper, WorkingContainer
from buildpy.engine import ENGINE_VARIABLES, ContainerSpec, Engine, ImageInfo, Mount, VolumeMount
from buildpy.leftovers import container_name
from buildpy.plan import BuildPlan
from buildpy.wheelvolume import WheelhouseVolume

PHASE_VARIABLE = "BUILDPY_ASSEMBLE_PHASE"
# pip's defaults (5 retries with back-off, for every file) keep a build on an unreachable
# index busy for minutes: micropipenv retries each package in rounds. uv (for uv.lock) the
# same. Set unless the user set them (-e, --env-file, .s2i/environment, --build-env).
FAIL_FAST = {
    "PIP_RETRIES": "1",
    "PIP_TIMEOUT": "10",
    "UV_HTTP_RETRIES": "1",
    "UV_HTTP_TIMEOUT": "10",
}


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
    files: BuildSecrets
    wheels: WheelhouseVolume | None = None

    @classmethod
    def start(cls, plan: BuildPlan, engine: Engine, out: Output) -> BuildSession:
        """Get the builder (pulled if the policy says so), choose the scripts, make sure
        the download cache exists. The build-only files reach Podman when the session's
        ``with`` block is entered."""
        options = plan.options
        builder = registry.obtain(engine, options.builder, options.pull, options.tls_verify)
        chosen = scripts.choose(
            builder.labels, set(plan.uploaded_scripts), builder.ref, plan.scripts_url
        )
        volumes = (cache.downloads(engine),) if uses_downloads(plan) else ()
        files = BuildSecrets(engine, plan.files, builder.user)
        reaper = Reaper(engine)
        reaper.sweep()
        wheelhouse = plan.wheelhouse
        wheels = (
            WheelhouseVolume(engine, wheelhouse.path, builder.id)
            if wheelhouse is not None and not wheelhouse.writable
            else None
        )
        owner = Owner(builder)
        return cls(plan, engine, builder, chosen, owner, out, reaper, volumes, files, wheels)

    def __enter__(self) -> BuildSession:
        self.files.__enter__()
        if self.wheels is not None:
            self.wheels.__enter__()  # made when a container first needs it
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Containers first (the reaper waits for its removals), then what they mounted."""
        try:
            self.reaper.__exit__(*exc_info)
        finally:
            try:
                if self.wheels is not None:
                    self.wheels.__exit__(*exc_info)
            finally:
                self.files.__exit__(*exc_info)

    def container(
        self,
        image: str,
        env: Mapping[str, str],
        labels: Mapping[str, str],
        user: str | None = None,
        command: tuple[str, ...] | None = None,
        runs: bool = True,
    ) -> WorkingContainer:
        """A working container that runs assemble from ``image``, with the session's mounts,
        as the builder's user unless ``user`` says otherwise (``command``, when given, runs
        instead of assemble, after the same wrapper). One that never ``runs`` (the source
        is placed into it) needs no wheelhouse, so none is uploaded for it.

        ``env`` and ``labels`` are committed with it; build-only values are uploaded
        (see ``build_env``), never put here.
        """
        spec = ContainerSpec(
            image=image,
            command=(
                "/bin/sh",
                "-c",
                WRAPPER,
                "buildpy-assemble",
                *(command or (self.scripts.assemble,)),
            ),
            user=self.builder.user if user is None else user,
            env=env,
            labels=labels,
            mounts=self.mounts(),
            volumes=self.volumes + self._wheelhouse(runs),
            secrets=self.files.mounts,
            network=self.plan.options.network,
            name=container_name(),
            unset_env=self.engine_variables(env),
        )
        return WorkingContainer(self.engine, spec, self.owner, self.reaper)

    def _wheelhouse(self, runs: bool) -> tuple[VolumeMount, ...]:
        return self.wheels.mounts() if self.wheels is not None and runs else ()

    def mounts(self) -> tuple[Mount, ...]:
        """Bind mounts of every working container: the wheelhouse ``buildpy wheelhouse``
        fills (a build's own wheelhouse is a volume: ``wheels``)."""
        wheelhouse = self.plan.wheelhouse
        return (wheelhouse.mount(),) if wheelhouse is not None and wheelhouse.writable else ()

    def engine_variables(self, env: Mapping[str, str]) -> tuple[str, ...]:
        """The variables the engine adds to every container (TERM, container) that neither
        the builder's own ENV nor ``env`` sets: the container must not have them, or the
        commit would keep them in the image. (A commit keeps what its container's image
        has even so: dependency layers made before buildpy unset them have another key,
        see ``dependencies.key``.)"""
        return tuple(
            name for name in ENGINE_VARIABLES if name not in self.builder.env and name not in env
        )

    def build_env(
        self, phase: str | None, image: Mapping[str, str] | None = None, **more: str
    ) -> dict[str, str]:
        """Build-only values for assemble, lowest first: pip's fail-fast settings (unless
        the image's variables set them), ``image`` (image variables that must not be
        committed with this container), cache locations, the plan's (CA bundle, index,
        ``--build-env``), the wheelhouse's, the phase, ``more``."""
        index = download_index(self.plan, self.builder.env) if self.volumes else None
        return build_variables(self.plan, index, phase, image, **more)


def build_variables(
    plan: BuildPlan,
    downloads: str | None,
    phase: str | None,
    image: Mapping[str, str] | None = None,
    **more: str,
) -> dict[str, str]:
    """``BuildSession.build_env`` for a plan, with the download cache of the package index
    ``downloads`` (``download_index``) or without one (None; the Containerfile writer passes
    the same values to ``podman build``)."""
    values = {k: v for k, v in FAIL_FAST.items() if k not in plan.image_env}
    values.update(image or {})
    values.update(buildpy_variables(downloads is not None, downloads or ""))
    values.update(plan.build_env)
    if plan.wheelhouse is not None:
        values.update(plan.wheelhouse.variables())
    if phase is not None:
        values[PHASE_VARIABLE] = phase
    values.update(more)
    return values


def buildpy_variables(downloads: bool, index: str) -> dict[str, str]:
    """What buildpy itself gives assemble, build-only: the locations of the download cache
    of the package index ``index`` (``download_index``), or, without it, no pip cache."""
    return cache.download_variables(index) if downloads else {"PIP_NO_CACHE_DIR": "1"}


def uses_downloads(plan: BuildPlan) -> bool:
    """Whether the build mounts the download cache: not with --no-cache, and not with a
    wheelhouse (no index: the wheelhouse holds everything, and its wheels must not reach
    a cache that index builds read)."""
    return plan.options.cache and plan.wheelhouse is None


def download_index(plan: BuildPlan, builder_env: Mapping[str, str]) -> str:
    """The digest of the package indexes this build's installers use (``cache.index_digest``):
    the builder's variables, then the image's, then the build-only ones, as assemble sees
    them, and the index lines of the dependency files."""
    env = {**builder_env, **plan.image_env, **plan.build_env}
    return cache.index_digest(env, plan.dependencies.contents)
