"""Two phases on a builder that does not know them: its own assemble, run twice. Pure.

buildpy's builders say they can install dependencies on their own (label
``io.buildpy.assemble-phases``). Other S2I builders (sclorg's, Red Hat's certified
images, a site's own) do not, yet most of their ``assemble`` scripts do the same
three things: move ``/tmp/src/*`` into ``$HOME``, install what the dependency files
ask for (``pip install -r requirements.txt``, pipenv, micropipenv), then finish
(collectstatic, fix-permissions). So buildpy runs that assemble, unmodified, twice:

1. with only the files that decide dependencies in ``/tmp/src``; the installer
   installs everything; ``DEPENDENCY_SCRIPT`` then removes those files from
   ``$HOME`` (a second ``mv /tmp/src/* "$HOME"`` fails on a directory that is
   already there, such as ``.s2i/`` or ``requirements/``), and the result is kept as
   the dependency layer, keyed like buildpy's own layers and marked ``FOREIGN_LABEL``;
2. on that layer, with the whole source: the installer finds everything satisfied
   and the rest of assemble runs as it always does.

``split_reason`` says where that would not give the image one run would, so the
build keeps one phase: a project that assemble installs itself (``setup.py``,
``setup.cfg``, a ``pyproject.toml`` with a build backend: the first run would see
only a stub of it), a packaging tool that assemble installs and links into
``$HOME`` (sclorg's ``ln -s`` fails the second time), a builder with no ``$HOME``.
The build (``layer``, ``build``) also falls back when the first run fails with the
partial source, or the second on the layer: one phase on the builder, with a warning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

FOREIGN_LABEL = "io.buildpy.dependencies.foreign"  # on layers made by a foreign assemble
KEY_MARK = "foreign-assemble-v1:"  # in the key: such a layer is never one of buildpy's own

# Variables that make sclorg-style assembles install a packaging tool into $HOME and link
# it with `ln -s`, which fails when the link is already there (the second run).
TOOL_VARIABLES = ("ENABLE_PIPENV", "ENABLE_MICROPIPENV")
_BUILD_TABLE = re.compile(r"^\s*\[\s*(?:build-system|project)\s*\]", re.MULTILINE)

# Run as `sh -c DEPENDENCY_SCRIPT buildpy-dependencies ASSEMBLE NAME...`: assemble, then
# the top-level names of the uploaded dependency files removed from $HOME, so that the
# second run places the whole source as it would on the builder. assemble's status is kept.
DEPENDENCY_SCRIPT = (
    '"$1" || exit "$?"; shift; '
    'case "${HOME:-}" in /?*) ;; *) exit 0 ;; esac; '
    'for name do rm -rf "${HOME%/}/$name" || exit 1; done'
)


def split_reason(
    files: Mapping[str, bytes], env: Mapping[str, str], home: str, builder_ref: str
) -> str | None:
    """Why running a foreign builder's assemble twice would change the image, or None.

    ``files`` are the dependency files with their contents, ``env`` what assemble sees
    (the builder's variables, the user's, the build-only ones), ``home`` the builder's
    ``$HOME``."""
    if not home.startswith("/") or home.rstrip("/") == "":
        return f"builder {builder_ref} sets no HOME: where its assemble puts the source is unknown"
    project = project_install(files, env)
    if project is not None:
        return project
    for name in TOOL_VARIABLES:
        if env.get(name):
            return (
                f"{name} is set: an S2I assemble links the tool into $HOME/.local/bin,"
                " which fails when assemble runs a second time"
            )
    return None


def project_install(files: Mapping[str, bytes], env: Mapping[str, str]) -> str | None:
    """Why assemble would install the project itself (``pip install .``), or None.

    With only the dependency files it would build a stub of the project; sclorg's
    assemble installs one when setup.py or setup.cfg is there
    (``DISABLE_SETUP_PY_PROCESSING`` stops it), newer ones also for a pyproject.toml
    that names a build backend or a project (``DISABLE_PYPROJECT_TOML_PROCESSING``)."""
    if not env.get("DISABLE_SETUP_PY_PROCESSING"):
        for name in ("setup.py", "setup.cfg"):
            if name in files:
                return f"{name}: assemble installs the project itself, which needs the source"
    pyproject = files.get("pyproject.toml")
    if (
        pyproject is not None
        and not env.get("DISABLE_PYPROJECT_TOML_PROCESSING")
        and _BUILD_TABLE.search(pyproject.decode("utf-8", errors="replace"))
    ):
        return (
            "pyproject.toml has [build-system] or [project]: assemble may install"
            " the project itself, which needs the source"
        )
    return None


def top_level(files: Mapping[str, bytes]) -> tuple[str, ...]:
    """The names in ``$HOME`` the dependency files arrive under (``requirements/a.txt``
    arrives as ``requirements``), sorted."""
    return tuple(sorted({name.split("/", 1)[0] for name in files}))


def dependency_command(assemble: str, files: Mapping[str, bytes]) -> tuple[str, ...]:
    """The working container's command (after buildpy's wrapper) for the first run."""
    return ("/bin/sh", "-c", DEPENDENCY_SCRIPT, "buildpy-dependencies", assemble, *top_level(files))
