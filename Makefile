# collective.plonecelery: the two commands are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
SENTINEL := $(VENV)/.installed

.PHONY: bench-quick bench-webhooks webhook install run test test-topology test-unit test-packaging test-integration lint format docs bench constraints clean

$(SENTINEL): setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel -c constraints.txt
	$(BIN)/pip install -q -e '.[test,docs]' -c constraints.txt
	touch $(SENTINEL)

install: $(SENTINEL)

## Run ZEO + Plone (with the add-on) + a Celery worker + a demo blog, on an embedded SQLite broker.
run: install
	$(BIN)/python -m collective.plonecelery.devtools.devserver

## Install and run the whole test suite (unit tests, integration tests on every broker, then
## the core of them (-m core) on RelStorage and on the SQLAlchemy brokers of PostgreSQL and MariaDB).
test: lint
	$(BIN)/python -m pytest tests/unit -p no:cacheprovider
	$(BIN)/python benchmarks/run.py --quick
	PLONECELERY_TEST_BROKER=sqlite $(BIN)/python -m pytest tests/integration -p no:cacheprovider
	PLONECELERY_TEST_BROKER=redis $(BIN)/python -m pytest tests/integration -p no:cacheprovider
	PLONECELERY_TEST_BROKER=amqp $(BIN)/python -m pytest tests/integration -p no:cacheprovider
	PLONECELERY_TEST_DATABASE=relstorage $(BIN)/python -m pytest tests/integration -m core -p no:cacheprovider
	PLONECELERY_TEST_BROKER=postgresql $(BIN)/python -m pytest tests/integration -m core -p no:cacheprovider
	PLONECELERY_TEST_BROKER=mysql $(BIN)/python -m pytest tests/integration -m core -p no:cacheprovider
	$(BIN)/python -m pytest tests/packaging -p no:cacheprovider
	$(BIN)/python -m pytest tests/topology -p no:cacheprovider

## The seed topology in network namespaces (needs root: ip netns), once, not per broker
test-topology: install
	$(BIN)/python -m pytest tests/topology -p no:cacheprovider

test-unit: install
	$(BIN)/python -m pytest tests/unit -p no:cacheprovider

## Build the sdist and wheel, check them, install the wheel in a fresh venv and run it (slow).
test-packaging: install
	$(BIN)/python -m pytest tests/packaging -p no:cacheprovider

## ruff, and the import contracts of .importlinter (the layers of docs/architecture.rst)
lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

docs: install
	$(BIN)/sphinx-build -q -W -b html docs docs/_build/html

## Every goal of issue 12 (throughput, request side, outbox steady state, webhook endpoint,
## scaling, task table per broker), with the goal table; writes benchmarks/results/latest.json
## (needs Redis, RabbitMQ, PostgreSQL and MariaDB on loopback; about 15 minutes)
bench: install
	$(BIN)/python benchmarks/run.py

## The same with tiny N (under 2 minutes; one broker, RabbitMQ): checks the scripts run and
## the JSON has every key
bench-quick: install
	$(BIN)/python benchmarks/run.py --quick

## Webhook endpoint latency under 20 concurrent senders (needs Redis)
bench-webhooks: install
	$(BIN)/python benchmarks/webhook_load.py

constraints:
	@echo "Rebuild constraints.txt from a clean venv with: pip install -e '.[test,docs]' && pip freeze"

clean:
	rm -rf $(VENV) var etc

## versions.cfg (buildout) from constraints.txt (pip)
versions.cfg: constraints.txt
	{ echo "# Buildout versions generated from constraints.txt (make versions.cfg); keep them in step."; \
	  echo "[versions]"; grep -v '^#' constraints.txt | grep '==' | sed 's/==/ = /'; } > versions.cfg

## Send a freshly signed demo webhook to a running `make run` (prints the curl line too)
webhook: install
	@line="$$($(BIN)/python -m collective.plonecelery.devtools.devserver --curl)" && echo "$$line" && eval "$$line"
