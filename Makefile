# The platform on one workstation: real Kafka (KRaft) and PostgreSQL from the project's own
# scripts, the services as local processes. See README.md.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.PHONY: help setup platform up down test test-cluster lint clean bench

CACHE_DIR ?= $(HOME)/.cache/ikd-mpp
UV_VERSION := 0.13.8
UV := $(or $(shell command -v uv 2>/dev/null),$(CACHE_DIR)/bootstrap/bin/uv)
export UV

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(CACHE_DIR)/bootstrap/bin/uv:
	python3 -m venv $(CACHE_DIR)/bootstrap
	$(CACHE_DIR)/bootstrap/bin/pip install --quiet uv==$(UV_VERSION)

.venv/.synced: uv.lock pyproject.toml $(UV)
	$(UV) sync --frozen --all-packages --quiet
	@touch $@

setup: .venv/.synced ## install Python, the workspace and the development keys
	@.venv/bin/python deploy/scripts/dev_secrets.py .run/dev

platform: setup ## start Kafka and PostgreSQL, create topics and databases, migrate
	@bash deploy/scripts/platform.sh start

up: setup ## start everything with demo data and print where to look
	@bash deploy/scripts/up.sh

down: ## stop everything the project started
	@bash deploy/scripts/down.sh

test: setup ## set up from scratch, start what the tests need, run the whole suite, stop it again
	@bash deploy/scripts/test.sh

test-cluster: setup ## tests/cluster on a local 3-broker Kafka: a broker, a worker, a relay lost under load
	@IKD_KAFKA_BROKERS=3 bash deploy/scripts/test.sh -rP --durations=0

lint: setup ## ruff and mypy
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

bench: setup ## measure the targets of the design brief; writes docs/BENCHMARKS.md
	@bash deploy/scripts/bench.sh

clean: down ## stop everything and wipe the data folders
	rm -rf .run
