# The two commands of the README:  make demo   and   make test
.PHONY: setup demo test test-fast lint
setup:
	@./scripts/setup.sh

# the demo needs no browser: Chromium (apt-get, ~30 s) is for the review-page test, which `make test` runs
demo:
	@MEDMODAL_SKIP_BROWSER=1 ./scripts/setup.sh
	.venv/bin/medmodal demo --out runs/demo

test: setup
	@# the optional Ray extra (tests/evaluation/test_executors.py) and the peers extra (transformers, for
	@# tests/models/test_transchex_peer.py); kept out of `make demo` (a ~80 MB wheel)
	@.venv/bin/python -c "import ray, transformers" 2>/dev/null || { .venv/bin/python -m pip install -q --disable-pip-version-check \
		-c constraints/cpu.txt -e ".[distributed,peers]" 2>&1 | grep -v "is ignored: it is neither" || true; }
	@# PYTHONDONTWRITEBYTECODE unset for the tests: the many test subprocesses import the same modules,
	@# compiled once and cached (uv's set-up does not byte-compile site-packages up front, unlike pip)
	PYTHONDONTWRITEBYTECODE= .venv/bin/python -m pytest -q

# the quick local loop: everything but the tests marked slow (CI runs them all: `make test`)
test-fast: setup
	PYTHONDONTWRITEBYTECODE= .venv/bin/python -m pytest -q -m "not slow"

# formatter, linter and type checker (CI runs it before the tests); settings in pyproject.toml
lint: setup
	.venv/bin/ruff format --check medmodal tests
	.venv/bin/ruff check medmodal tests
	.venv/bin/mypy
