"""What the commit sets on the output image: CMD, USER, ENTRYPOINT, labels. Pure."""

from __future__ import annotations

import json

from buildpy.engine import ImageInfo
from buildpy.gitinfo import GitInfo


def output_labels(builder_ref: str, source_location: str, git: GitInfo | None) -> dict[str, str]:
    """The S2I build labels, under the names s2i itself uses."""
    labels = {
        "io.openshift.s2i.build.image": builder_ref,
        "io.openshift.s2i.build.source-location": source_location,
    }
    if git is not None:
        labels["io.openshift.build.commit.id"] = git.commit
        labels["io.openshift.build.commit.author"] = git.author
        labels["io.openshift.build.commit.date"] = git.date
        labels["io.openshift.build.commit.message"] = git.message
        if git.ref:
            labels["io.openshift.build.commit.ref"] = git.ref
    return labels


def commit_changes(builder: ImageInfo, run_script: str) -> tuple[str, ...]:
    """Dockerfile-style changes: CMD is the run script; the rest as the builder had it."""
    changes = [f"CMD {json.dumps([run_script])}"]
    # The working container ran with an empty entrypoint; give the builder's back.
    changes.append(f"ENTRYPOINT {json.dumps(list(builder.entrypoint))}")
    if builder.user:
        changes.append(f"USER {builder.user}")
    if builder.workdir:
        changes.append(f"WORKDIR {builder.workdir}")
    return tuple(changes)


def split_tag(reference: str) -> tuple[str, str]:
    """``name[:tag]`` to (name, tag), tag defaulting to latest; a registry port is not a tag."""
    name, sep, tag = reference.rpartition(":")
    if not sep or "/" in tag:
        return reference, "latest"
    return name, tag
