# The two commands a newcomer needs (see README.md): `make up` and `make test`.
.PHONY: up test test-quick setup bench

setup:
	@bash scripts/setup.sh

up: setup
	.venv/bin/kumo up

test: setup
	.venv/bin/ruff check src tests bench
	.venv/bin/python -m pytest -q tests

test-quick: setup
	.venv/bin/python -m pytest -q -m "not slow" tests

bench: setup
	.venv/bin/python bench/arm_api.py
