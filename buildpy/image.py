"""What the commit sets on the output image: CMD, USER, ENTRYPOINT, labels. Pure."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from buildpy.engine import ImageInfo
from buildpy.errors import UsageError

if TYPE_CHECKING:  # gitinfo imports subprocess, which the command line need not pay for
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


# containers/image's reference grammar, without a digest: [host[:port]/]path[:tag].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = rf"{_LABEL}(?:\.{_LABEL})*"
_REFERENCE = re.compile(
    rf"(?:{_HOST}(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
)


def is_image_name(reference: str) -> bool:
    """Whether ``reference`` can name an image in a registry (with a tag or a digest)."""
    name, _, digest = reference.partition("@")
    return _REFERENCE.fullmatch(name.lower()) is not None and (
        not digest or re.fullmatch(r"sha256:[0-9a-f]{64}", digest) is not None
    )


def check_reference(reference: str, option: str) -> str:
    """``reference`` when it can name an image; a ``UsageError`` saying why not otherwise."""
    if _REFERENCE.fullmatch(reference) and len(reference) <= 255:
        return reference
    if "@" in reference:
        problem = "a digest names an existing image; a build can only give it a name"
    elif reference != reference.lower() and _REFERENCE.fullmatch(reference.lower()):
        problem = "image names are lower case"
    else:
        problem = "not an image name"
    raise UsageError(
        f"{option} {reference!r}: {problem}",
        "write [REGISTRY/]NAME[:TAG] with a lower-case NAME, e.g. localhost/myapp:1.0",
    )
