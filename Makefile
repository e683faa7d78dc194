# The two commands a new machine needs: `make run` and `make test`. Everything else they install.
SHELL := /bin/bash
UV := scripts/uv
export UV_FROZEN := 1
# the interpreter of the venv: a distribution's optimised build when the machine has one, else uv's
# choice (scripts/python-path says why; POSTWIRE_PYTHON overrides)
PYTHON := $(shell scripts/python-path)
ifneq ($(PYTHON),)
export UV_PYTHON := $(PYTHON)
endif

.PHONY: install run test test-quick lint typecheck proto bench chaos fuzz clean FORCE

install: .venv/.installed

.venv/.installed: uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml) $(wildcard proto/postwire/v1/*.proto) .venv/.python
	$(UV) sync --all-packages
	scripts/gen-proto
	@echo "$(PYTHON)" > .venv/.python
	@touch $@

# the interpreter the venv was built with: a change rebuilds it (no venv yet: nothing to compare, and
# uv must find the folder absent or a venv)
.venv/.python: FORCE
	@if [ -d .venv ] && [ "$$(cat $@ 2>/dev/null)" != "$(PYTHON)" ]; then echo "$(PYTHON)" > $@; fi

FORCE:

proto: install
	scripts/gen-proto

run: install
	$(UV) run postwire run

test: install
	$(UV) run ruff check .
	$(UV) run mypy
	$(UV) run lint-imports
	scripts/browser-deps
	$(UV) run pytest --durations=10

# the quick part, while working: every test not marked slow (no whole-system, chaos, cluster or image
# runs); `make test` is what CI runs
test-quick: install
	scripts/browser-deps
	$(UV) run pytest -m "not slow"

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
