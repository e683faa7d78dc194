# The two commands a new machine needs: `make run` and `make test`. Everything else they install.
SHELL := /bin/bash
UV := scripts/uv
export UV_FROZEN := 1

.PHONY: install run test lint typecheck proto bench chaos fuzz clean

install: .venv/.installed

.venv/.installed: uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml) $(wildcard proto/postwire/v1/*.proto)
	$(UV) sync --all-packages
	scripts/gen-proto
	@touch $@

proto: install
	scripts/gen-proto

run: install
	$(UV) run postwire run

test: install
	$(UV) run ruff check .
	$(UV) run mypy
	$(UV) run pytest

lint:
	$(UV) run ruff check .
	$(UV) run ruff format --check .

typecheck: install
	$(UV) run mypy

bench: install
	scripts/bench-deps
	$(UV) run python bench/throughput.py

# the long form of the fault tests (docs/reliability.md): more messages, several rounds of kills
chaos: install
	POSTWIRE_CHAOS_MESSAGES=$${POSTWIRE_CHAOS_MESSAGES:-3000} POSTWIRE_CHAOS_ROUNDS=$${POSTWIRE_CHAOS_ROUNDS:-2} \
		$(UV) run pytest -s tests/chaos

# the long form of the API fuzzing (schemathesis, docs/reliability.md)
fuzz: install
	POSTWIRE_FUZZ_EXAMPLES=$${POSTWIRE_FUZZ_EXAMPLES:-500} $(UV) run pytest services/api-gateway/tests/test_fuzz.py

clean:
	rm -rf .venv .data
