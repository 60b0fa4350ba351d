"""Will a build reuse its dependency layer, grow an earlier one or build one, and why.

For ``buildpy plan``; only looks images up (``find_image``). The key is
computed by ``layer.Inputs.of``, as the build computes it. When no layer has the key:

* the growth name (``cache.growth_tag``) finds the newest layer made from the same
  inputs but for requirement lines, from any source; when this build only adds lines to
  it, the layer grows from it (the recorded line digests give the counts);
* else the layer last made or used for the same source location and builder (its name
  is ``cache.source_tag``: one inspect, where listing every dependency image took 5 s
  with 134 of them) is compared input by input with its ``io.buildpy.dependencies.inputs``
  label: "requirements.txt changed", "PIP_INDEX_URL changed", "the builder changed";
* else, for a source without such a layer, the growth layer's lines are counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from buildpy import cache, dependencies, layer
from buildpy.dependencies import InputChange, InputDigests
from buildpy.engine import Engine, ImageInfo
from buildpy.plan import BuildPlan


@dataclass(frozen=True)
class Reuse:
    """What becomes of the dependency layer, and why."""

    status: str  # "reuse", "grow", "build", or "none" (one phase: no dependency layer)
    reason: str
    image: str | None = None  # the layer's name
    earlier: str | None = None  # the earlier layer compared with (grown from, for "grow")
    changes: tuple[InputChange, ...] = ()  # what differs from ``earlier``


def forecast(engine: Engine, plan: BuildPlan, builder: ImageInfo) -> Reuse:
    """What a build of ``plan`` on ``builder`` will do about its dependency layer."""
    split = layer.split_reason(plan, builder)
    if split is not None:
        return Reuse("none", f"one phase: {split}")
    inputs = layer.Inputs.of(plan, builder)
    if engine.find_image(inputs.tag) is not None:
        return Reuse("reuse", "a layer with the same key exists", inputs.tag)
    growth = engine.find_image(inputs.growth)
    recorded = growth.labels.get(cache.LINES_LABEL) if growth else None
    if (
        growth
        and dependencies.can_grow(inputs.variables)
        and dependencies.extends(recorded, inputs.lines)
    ):
        why = "only requirement lines were added: pip installs just those on the earlier layer"
        return Reuse("grow", why, inputs.tag, _name(growth), _line_changes(recorded, inputs))
    own = _against_own(engine, inputs, builder)
    if own is not None:
        return own
    if growth is not None:  # the same inputs but requirement lines, maybe another source's
        why = "requirement lines were removed or edited: the new layer starts from the builder"
        return Reuse("build", why, inputs.tag, _name(growth), _line_changes(recorded, inputs))
    why = f"no earlier dependency layer of this source with builder {builder.ref}: a new one"
    return Reuse("build", why + " is built", inputs.tag)


def _against_own(engine: Engine, inputs: layer.Inputs, builder: ImageInfo) -> Reuse | None:
    """Compare with the layer last made or used for this source and builder, if any."""
    latest = engine.find_image(inputs.latest)
    recorded = InputDigests.from_label(latest.labels.get(cache.INPUTS_LABEL)) if latest else None
    if latest is None or recorded is None or recorded.source != inputs.digests.source:
        return None
    changes = [
        _detailed(change, latest.labels, inputs, builder)
        for change in inputs.digests.changes_since(recorded)
    ]
    why = "inputs changed since the last layer of this source: a new layer is built"
    if not changes:
        why = "the last layer of this source has the same inputs but another name"
    return Reuse("build", why, inputs.tag, _name(latest), tuple(changes))


def _line_changes(recorded: str | None, inputs: layer.Inputs) -> tuple[InputChange, ...]:
    counts = dependencies.line_changes(recorded, inputs.lines) or {}
    return tuple(
        InputChange("file", name, "changed", _lines(added, removed))
        for name, (added, removed) in counts.items()
        if added or removed
    )


def _detailed(
    change: InputChange, labels: Mapping[str, str], inputs: layer.Inputs, builder: ImageInfo
) -> InputChange:
    """Say more where the earlier layer's labels tell more: the builder's names, lines."""
    if change.kind == "builder":
        before = labels.get(cache.BUILDER_LABEL, "")
        detail = f"{before} -> {builder.ref}" if before != builder.ref else "the image was rebuilt"
        return InputChange(change.kind, change.name, change.change, detail)
    if change.kind == "file" and change.change == "changed" and change.name in inputs.lines:
        counts = dependencies.line_changes(labels.get(cache.LINES_LABEL), inputs.lines)
        added, removed = (counts or {}).get(change.name, (0, 0))
        if added or removed:
            return InputChange(change.kind, change.name, change.change, _lines(added, removed))
    return change


def _name(found: ImageInfo) -> str:
    """An earlier layer's name: its key name, not its growth or source name."""
    keyed = [name for name in found.names if ":grow-" not in name and ":from-" not in name]
    if keyed:
        return keyed[0]
    key = found.labels.get(cache.KEY_LABEL)
    return cache.dependency_tag(key) if key else found.id


def _lines(added: int, removed: int) -> str:
    return f"{added} line{'s' * (added != 1)} added, {removed} removed"
