"""``buildpy usage``: what a builder's usage script prints (S2I's ``s2i usage``)."""

from __future__ import annotations

from buildpy import scripts
from buildpy.container import WorkingContainer
from buildpy.engine import ContainerSpec, Engine
from buildpy.errors import BuilderImageError
from buildpy.leftovers import container_name
from buildpy.registry import require_builder


def usage(engine: Engine, ref: str) -> str:
    """Run the image's usage script in a throwaway container and return what it printed."""
    builder = require_builder(engine, ref, chooser="the IMAGE argument")
    chosen = scripts.image_scripts_dir(builder.labels, ref)
    if chosen is None:
        raise BuilderImageError(
            f"{ref} has no io.openshift.s2i.scripts-url label, so it has no usage script",
            "is it an S2I builder image?",
        )
    spec = ContainerSpec(
        image=builder.id,
        command=(f"{chosen}/usage",),
        user=builder.user,
        name=container_name("usage"),
    )
    with WorkingContainer(engine, spec) as container:
        status, text = container.run_quietly()
    if status != 0:
        raise BuilderImageError(f"{ref}'s usage script exited with status {status}")
    return text.decode(errors="replace")
