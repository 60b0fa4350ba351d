# Two commands do all set-up on a fresh machine:
#   make demo   set up, build examples/hello-flask with buildpy, run it, show it answering HTTP
#   make test   set up, then the whole suite (unit and integration, with real Podman), the
#               unit tests under Python 3.9 (scripts/test-py39), and the tests marked
#               `rootless` again as an ordinary user (scripts/test-rootless)
.PHONY: demo test test-rootless test-py39 setup builders wheelhouse lint unit

setup:
	scripts/setup-host

builders: setup

demo: setup
	scripts/demo

wheelhouse:
	scripts/make-wheelhouse

# Every run always happens; any one failing fails `make test`.
test: setup wheelhouse
	@status=0; \
	.venv/bin/python -m pytest || status=1; \
	scripts/test-py39 || status=1; \
	scripts/test-rootless || status=1; \
	exit $$status

test-rootless: setup wheelhouse
	scripts/test-rootless

unit: setup
	.venv/bin/python -m pytest tests/unit

# s2i/poetry-requirements and s2i/record-inputs are Python (ruff), the other scripts are shell
# (shellcheck).
lint: setup
	.venv/bin/ruff check buildpy tests s2i/poetry-requirements s2i/record-inputs
	.venv/bin/mypy
	shellcheck $(filter-out s2i/poetry-requirements s2i/record-inputs,$(wildcard s2i/*)) scripts/* .ci/run

# buildpy on RHEL 9's Python: the unit tests again under Python 3.9 (Debian bullseye), in a
# container.
test-py39: setup
	scripts/test-py39
