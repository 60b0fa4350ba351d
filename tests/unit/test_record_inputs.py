"""s2i/record-inputs: what a Python program read from under a root, as the record says it.

The script runs in builder images under their Python; here it runs under the test's, on
small programs that do one thing each, so every rule of the record is seen to hold.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[2] / "s2i" / "record-inputs"
# The interpreter without this checkout's virtualenv (-S: no site-packages): a checkout
# under /tmp would otherwise have the record count the virtualenv's files as build-only
# files, which in a builder image (Python under /usr or /opt) they never are.
PYTHON = getattr(sys, "_base_executable", sys.executable)


def record(tmp_path: Path, program: str, *args: str, status: int = 0) -> dict[str, Any]:
    root = tmp_path / "src"
    (root / "pkg").mkdir(parents=True, exist_ok=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "settings.py").write_text("NAME = 'x'\n")
    (root / "static").mkdir(exist_ok=True)
    (root / "static" / "app.css").write_text("body {}\n")
    (root / "prog.py").write_text(program)
    out = tmp_path / "record.json"
    done = subprocess.run(
        [PYTHON, "-S", str(SCRIPT), str(root), str(out), str(root / "prog.py"), *args],
        capture_output=True,
        text=True,
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
    )
    assert done.returncode == status, done.stderr
    return json.loads(out.read_text()) if status == 0 else {}


def test_reads_listings_and_lookups_under_the_root_are_recorded(tmp_path: Path) -> None:
    made = record(
        tmp_path,
        "import os, sys\n"
        "import pkg.settings\n"
        "open('static/app.css').read()\n"
        "os.listdir('static')\n"
        "os.path.exists('missing.txt')\n"
        "open('/etc/hostname').close() if os.path.exists('/etc/hostname') else None\n"
        "assert sys.argv[1:] == ['collect', '--noinput'], sys.argv\n",
        "collect",
        "--noinput",
    )
    assert made["root"] == str(tmp_path / "src")
    assert set(made["reads"]) >= {"prog.py", "pkg/__init__.py", "pkg/settings.py", "static/app.css"}
    assert all(len(digest) == 16 for digest in made["reads"].values())
    assert not any(path.startswith("/") for path in made["reads"])  # the image's own: keyed
    assert "static" in made["listed"] and "pkg" in made["listed"]
    assert "." in made["listed"]  # the import system's listing of PYTHONPATH, made again
    assert made["looked"]["missing.txt"] == "-"
    assert made["untracked"] == []
    assert made["static_root"] is None  # no Django here


def test_a_byte_compiled_module_counts_as_its_source(tmp_path: Path) -> None:
    record(tmp_path, "import pkg.settings\n")  # writes pkg/__pycache__
    assert list((tmp_path / "src" / "pkg" / "__pycache__").glob("settings.*.pyc"))
    made = record(tmp_path, "import pkg.settings\n")  # now read from the .pyc
    assert "pkg/settings.py" in made["reads"]
    assert not any("__pycache__" in path for path in made["reads"])
    assert made["untracked"] == []  # writing byte code is no output


def test_running_a_program_or_writing_elsewhere_makes_the_record_untrusted(tmp_path: Path) -> None:
    ran = record(tmp_path, "import subprocess\nsubprocess.run(['true'])\n")
    assert any("ran another program" in why for why in ran["untracked"]), ran
    wrote = record(tmp_path, "open('out.txt', 'w').write('x')\n")
    assert any("wrote outside STATIC_ROOT" in why for why in wrote["untracked"]), wrote
    outside = tmp_path / "build-only.txt"  # below /tmp, outside the root: a build's own file
    outside.write_text("s")
    build_only = record(tmp_path, f"open({str(outside)!r}).read()\n")
    assert any("read a build-only file" in why for why in build_only["untracked"]), build_only


def test_a_failing_program_writes_no_record_and_keeps_its_status(tmp_path: Path) -> None:
    record(tmp_path, "import sys\nsys.exit(3)\n", status=3)
    assert not (tmp_path / "record.json").exists()
