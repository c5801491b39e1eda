# The two commands of the README:  make demo   and   make test
.PHONY: setup demo test lint
setup:
	@./scripts/setup.sh

demo: setup
	.venv/bin/medmodal demo --out runs/demo

test: setup
	.venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check medmodal tests
