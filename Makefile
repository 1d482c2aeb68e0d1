# The two commands a newcomer needs (see README.md): `make up` and `make test`.
.PHONY: up test test-postgres test-quick setup bench

# The second pass runs the `store` tests against a real PostgreSQL server of kumo's own (scripts/postgres.sh),
# started for the pass and stopped after it whether the tests passed or not.
PG_TEST_URL = postgresql://kumo:kumo@127.0.0.1:55432/postgres
POSTGRES_PASS = bash scripts/postgres.sh start && \
	{ rc=0; KUMO_TEST_DATABASE_URL=$(PG_TEST_URL) .venv/bin/python -m pytest -q --durations=15 -m store tests || rc=$$?; \
	  bash scripts/postgres.sh stop; exit $$rc; }

setup:
	@bash scripts/setup.sh

up: setup
	.venv/bin/kumo up

# ruff, the whole suite on SQLite, then the PostgreSQL pass; the PostgreSQL pass runs even when the first
# failed, and the target fails when either did.
test: setup
	@rc=0; .venv/bin/ruff check src tests bench && .venv/bin/python -m pytest -q --durations=30 tests || rc=1; \
	( $(POSTGRES_PASS) ) || rc=1; exit $$rc

test-postgres: setup
	@$(POSTGRES_PASS)

test-quick: setup
	.venv/bin/python -m pytest -q -m "not slow" tests

bench: setup
	.venv/bin/python bench/arm_api.py
