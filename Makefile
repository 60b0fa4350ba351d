# Two commands do all set-up on a fresh machine:
#   make demo   set up, build examples/hello-flask with buildpy, run it, show it answering HTTP
#   make test   set up, then the whole suite (unit and integration, with real Podman)
.PHONY: demo test setup builders wheelhouse lint unit

setup:
	scripts/setup-host

builders: setup

demo: setup
	scripts/demo

wheelhouse:
	scripts/make-wheelhouse

test: setup wheelhouse
	.venv/bin/python -m pytest

unit: setup
	.venv/bin/python -m pytest tests/unit

lint: setup
	.venv/bin/ruff check buildpy tests
	.venv/bin/mypy
	shellcheck s2i/* scripts/* .ci/run

# buildpy on RHEL 9's Python: the unit tests again under Python 3.9 (Debian bullseye), in a
# container (scripts/test-py39). A prerequisite of `test`, so .ci/run runs it.
.PHONY: test-py39
test: test-py39
test-py39: setup
	scripts/test-py39
