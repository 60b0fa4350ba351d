"""How buildpy's s2i/run will start the application, and why: its decisions, repeated in Python.

In s2i/run's order: gunicorn with a ``gunicorn.conf.py`` that sets ``wsgi_app``;
``cd $APP_HOME``; ``APP_SCRIPT`` (default ``app.sh``), ``APP_FILE`` (default ``app.py``);
Django's ``migrate`` unless ``DISABLE_MIGRATE``; gunicorn with ``APP_MODULE``, ``wsgi``
(``wsgi.py``) or the ``setup.py`` name, with default settings or ``APP_CONFIG``;
without gunicorn, ``mod_wsgi-express`` with the same module (``wsgi.py`` as a script file);
Django's ``runserver``; else the error "don't know how to run your application".

Whether gunicorn, mod_wsgi or Django is installed is known only in the image: the plan
takes them as installed when the files the installer reads name them, and says so.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from buildpy.mirror import SourceView, Step, Variables, names

DEFAULT_PORT = "8080"
WORKERS_COMPUTED = "<WEB_CONCURRENCY computed at start>"  # mod_wsgi-express's --processes
WORKERS_RULE = (
    "computed at start: (memory limit in MiB - 43) / 40, at most 2 per CPU and 12, at least 1"
)
_WSGI_APP = re.compile(r"^[ \t]*wsgi_app[ \t]*=", re.MULTILINE)


@dataclass(frozen=True)
class Start:
    """The command the container's run script will exec, and what decided it."""

    decided_by: str = "buildpy"  # "buildpy": mirrored here; "builder"/"source": cannot tell
    # "gunicorn", "mod_wsgi", "script", "python", "runserver"; None: nothing
    kind: str | None = None
    target: str | None = None  # the WSGI module or file, script or Python file
    command: tuple[str, ...] = ()
    directory: str = "."  # where it runs, relative to $HOME
    before: tuple[Step, ...] = ()  # Django's migrate
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    assumptions: tuple[str, ...] = ()  # whether gunicorn, mod_wsgi and Django get installed
    workers: str | None = None  # WEB_CONCURRENCY: gunicorn's workers, mod_wsgi's processes
    error: str | None = None  # why run will exit 1


def decide(
    view: SourceView, env: Variables, files: Mapping[str, bytes], reads: Sequence[str]
) -> Start:
    """How buildpy's run script will start this source with these variables.

    ``files``: the dependency files' contents; ``reads``: those the installer reads
    (``Install.reads``), which say whether gunicorn, mod_wsgi and Django get installed.
    """
    return _Run(
        view,
        env,
        gunicorn=names(files, reads, "gunicorn"),
        django=names(files, reads, "django"),
        # mod_wsgi-standalone brings its own Apache: mod_wsgi-express on any builder
        mod_wsgi=names(files, reads, "mod_wsgi") or names(files, reads, "mod_wsgi-standalone"),
    ).decide()


@dataclass(frozen=True)
class _Run:
    view: SourceView
    env: Variables
    gunicorn: str | None  # the file that names it, when it gets installed
    django: str | None
    mod_wsgi: str | None  # the distribution that installs mod_wsgi-express

    def decide(self) -> Start:
        conf = self._gunicorn_conf()
        if conf is not None:
            return conf
        directory, found = self._app_home()
        if found is not None:
            return found
        base = Start(directory=directory, assumptions=self._assumptions())
        return (
            self._script(base)
            or self._python_file(base)
            or self._after_migrate(self._migrate(base))
        )

    def _assumptions(self) -> tuple[str, ...]:
        said = []
        for package, named in (("gunicorn", self.gunicorn), ("Django", self.django)):
            if named is not None:
                said.append(f"{package} is installed: {named} names it")
            else:
                said.append(f"{package} is not installed: no file the installer reads names it")
        if self.mod_wsgi is not None:  # said only when named: most apps never think of it
            said.append(f"mod_wsgi is installed: {self.mod_wsgi} names it (mod_wsgi-express)")
        return tuple(said)

    def _gunicorn_conf(self) -> Start | None:
        if self.gunicorn is None or not _WSGI_APP.search(self.view.text("gunicorn.conf.py")):
            return None
        return Start(
            kind="gunicorn",
            command=("gunicorn",),
            reasons=(
                "gunicorn.conf.py sets wsgi_app",
                f"gunicorn is named in {self.gunicorn} (20.1 or later reads wsgi_app)",
            ),
            assumptions=self._assumptions(),
            workers=self._workers(),
        )

    def _app_home(self) -> tuple[str, Start | None]:
        """Where run will be (relative to $HOME), or the Start that says why it stops."""
        home = self.env.value("APP_HOME")
        if not home:
            return ".", None
        directory = self.view.locate(home)
        if directory is None:
            note = f"{self.env.cite('APP_HOME')} lies outside the source: buildpy cannot check it"
            return home, Start(directory=home, notes=(note,), reasons=("APP_HOME is set",))
        if not self.view.is_dir(directory):
            error = f"run exits 1: APP_HOME '{home}' is not a directory in the source"
            return directory, Start(directory=directory, error=error)
        return directory, None

    def _default(self, name: str, default: str, directory: str) -> tuple[str, str]:
        """APP_SCRIPT/APP_FILE: set, or the default file when none of the three is set."""
        if self.env.is_set(name):
            return self.env.value(name), self.env.cite(name)
        chosen = ("APP_SCRIPT", "APP_FILE", "APP_MODULE")
        relpath = self.view.locate(default, directory)
        if any(self.env.is_set(n) for n in chosen) or not relpath or not self.view.is_file(relpath):
            return "", ""
        return default, f"{default} exists and none of APP_SCRIPT, APP_FILE, APP_MODULE is set"

    def _script(self, base: Start) -> Start | None:
        script, why = self._default("APP_SCRIPT", "app.sh", base.directory)
        if not script:
            return None
        relpath = self._existing(script, base.directory)
        if relpath is None:
            return replace(base, error=f"run exits 1: APP_SCRIPT file '{script}' not found")
        path = script if script.startswith("/") else f"./{script}"
        executable = relpath == "" or self.view.is_executable(relpath)
        command = (path,) if executable else ("/bin/bash", path)
        how = "it is executable" if executable else "not executable: run with bash"
        return replace(
            base, kind="script", target=script, command=self._wrapped(command), reasons=(why, how)
        )

    def _python_file(self, base: Start) -> Start | None:
        app_file, why = self._default("APP_FILE", "app.py", base.directory)
        if not app_file:
            return None
        if self._existing(app_file, base.directory) is None:
            return replace(base, error=f"run exits 1: APP_FILE file '{app_file}' not found")
        command = self._wrapped(("python", app_file))
        return replace(base, kind="python", target=app_file, command=command, reasons=(why,))

    def _existing(self, path: str, directory: str) -> str | None:
        """The file's path in the source ("" when outside it, where it is taken as there);
        None when the source lacks it."""
        relpath = self.view.locate(path, directory)
        if relpath is None:
            return ""
        return relpath if self.view.is_file(relpath) else None

    def _wrapped(self, command: tuple[str, ...]) -> tuple[str, ...]:
        """Behind tini with ENABLE_INIT_WRAPPER (as PID 1: no -s)."""
        return ("tini", "-g", "--", *command) if self.env.is_set("ENABLE_INIT_WRAPPER") else command

    def _manage_py(self, directory: str) -> bool:
        relpath = self.view.locate("manage.py", directory)
        return relpath is not None and self.view.is_file(relpath)

    def _migrate(self, base: Start) -> Start:
        if self.django is None:
            return base
        if self.env.is_set("DISABLE_MIGRATE"):
            note = f"migrate skipped: {self.env.cite('DISABLE_MIGRATE')}"
            return replace(base, notes=(*base.notes, note))
        if not self._manage_py(base.directory):
            note = "Django without manage.py: run warns and skips migrate"
            return replace(base, notes=(*base.notes, note))
        why = f"Django is named in {self.django}; DISABLE_MIGRATE is unset"
        return replace(base, before=(Step("python manage.py migrate --noinput", why),))

    def _after_migrate(self, base: Start) -> Start:
        return (
            self._gunicorn(base)
            or self._mod_wsgi(base)
            or self._runserver(base)
            or self._nothing(base)
        )

    def _gunicorn(self, base: Start) -> Start | None:
        module, why = self._module(base.directory)
        if self.gunicorn is None or not module:
            return None
        reasons: tuple[str, ...] = (why, f"gunicorn is named in {self.gunicorn}")
        if not self.env.is_set("APP_CONFIG") and not self.env.is_set("GUNICORN_CMD_ARGS"):
            port = self.env.value("PORT") or DEFAULT_PORT
            command: tuple[str, ...] = ("gunicorn", module, f"--bind=0.0.0.0:{port}")
            command += ("--access-logfile=-",)
            reasons += ("default settings: APP_CONFIG and GUNICORN_CMD_ARGS are unset",)
        else:
            config = self.env.value("APP_CONFIG")
            command = ("gunicorn", module, *(("--config", config) if config else ()))
            custom = [self.env.cite(n) for n in ("APP_CONFIG", "GUNICORN_CMD_ARGS")]
            reasons += ("custom settings: " + ", ".join(custom),)
        return replace(
            base,
            kind="gunicorn",
            target=module,
            command=command,
            reasons=reasons,
            workers=self._workers(),
        )

    def _mod_wsgi(self, base: Start) -> Start | None:
        """Without gunicorn: mod_wsgi-express, a production server, before runserver."""
        if self.gunicorn is not None or self.mod_wsgi is None:
            return None
        module, why = self._module(base.directory)
        if not module:
            return None
        entry: tuple[str, ...]
        if not self.env.is_set("APP_MODULE") and self._wsgi_py(base.directory):
            target, entry = "wsgi.py", ("wsgi.py",)  # the script file, as mod_wsgi-express takes
        else:
            target = module
            name, colon, callable_object = module.partition(":")  # gunicorn's module:callable
            entry = ("--application-type", "module", name)
            if colon:
                entry += ("--callable-object", callable_object)
        port = self.env.value("PORT") or DEFAULT_PORT
        processes = self.env.value("WEB_CONCURRENCY") or WORKERS_COMPUTED
        command: tuple[str, ...] = ("mod_wsgi-express", "start-server", *entry)
        command += ("--port", port, "--host", "0.0.0.0", "--log-to-terminal", "--access-log")
        command += ("--processes", processes)
        reasons = (why, f"mod_wsgi is named in {self.mod_wsgi}; gunicorn is not named")
        notes = base.notes
        if self.env.is_set("APP_CONFIG"):
            ignored = f"{self.env.cite('APP_CONFIG')} is gunicorn's: run warns that"
            notes += (f"{ignored} mod_wsgi-express ignores it",)
        return replace(
            base,
            kind="mod_wsgi",
            target=target,
            command=self._wrapped(command),
            reasons=reasons,
            notes=notes,
            workers=self._workers(),
        )

    def _wsgi_py(self, directory: str) -> str | None:
        wsgi = self.view.locate("wsgi.py", directory)
        return wsgi if wsgi is not None and self.view.is_file(wsgi) else None

    def _module(self, directory: str) -> tuple[str, str]:
        """APP_MODULE, else wsgi (wsgi.py), else the name in setup.py; and why."""
        if self.env.is_set("APP_MODULE"):
            return self.env.value("APP_MODULE"), self.env.cite("APP_MODULE")
        wsgi = self._wsgi_py(directory)
        if wsgi is not None:
            return "wsgi", f"{wsgi} exists (APP_MODULE is unset)"
        found = self.view.files_named("setup.py")
        if not found:
            return "", ""
        name = _setup_name(self.view.text(found[0]))
        if name is None:
            return f"<the name {found[0]} --name prints>", f"{found[0]} names no literal name="
        return name, f"the name in {found[0]} (APP_MODULE is unset and there is no wsgi.py)"

    def _workers(self) -> str:
        if self.env.is_set("WEB_CONCURRENCY"):
            return self.env.cite("WEB_CONCURRENCY")
        return WORKERS_RULE

    def _runserver(self, base: Start) -> Start | None:
        if self.django is None or not self._manage_py(base.directory):
            return None
        port = self.env.value("PORT") or DEFAULT_PORT
        command = self._wrapped(("python", "manage.py", "runserver", f"0.0.0.0:{port}"))
        why = f"Django is named in {self.django} and manage.py exists; no module to serve"
        return replace(base, kind="runserver", target="manage.py", command=command, reasons=(why,))

    def _nothing(self, base: Start) -> Start:
        return replace(
            base,
            error="run exits 1: don't know how to run your application; set APP_MODULE,"
            " APP_FILE or APP_SCRIPT, or add app.py, app.sh, wsgi.py, or a gunicorn.conf.py"
            " that sets wsgi_app",
        )


def _setup_name(text: str) -> str | None:
    """The literal ``name=`` of a ``setup()`` call, as s2i/run falls back to reading it."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                    return str(keyword.value.value)
    return None
