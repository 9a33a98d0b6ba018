SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.NOTPARALLEL:

VENV := .venv/bin
PYTEST_ARGS ?=
export CI

.PHONY: install services lint typecheck test run

install:
	scripts/services.sh ensure-venv

services:
	scripts/services.sh all

lint:
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .

typecheck:
	$(VENV)/mypy .

test: services lint typecheck
	$(VENV)/pytest $(PYTEST_ARGS)

run: services
	scripts/services.sh ensure-db "$${POSTGRES_DATABASE:-lamassu}"
	scripts/demo.sh
