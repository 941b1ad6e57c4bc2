# ctr-pipeline. `make help` lists the targets. Every target installs what it needs.
SHELL := /bin/bash
VENV  := .local/venvs/dev
CTR   := $(VENV)/bin/ctr
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv up down status logs deploy test test-unit test-web test-integration test-e2e lint \
        security bench bench-quick soak reliability lock clean

help: ## show this help
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

venv: ## create/refresh the virtualenvs from the lock files (idempotent)
	@bash infra/bootstrap.sh

up: venv ## set up and run the whole system on the embedded local cloud, print the URLs
	@$(CTR) up

down: ## stop exactly the processes `make up` started
	@if [ -x $(CTR) ]; then $(CTR) down; else echo "nothing to stop (no venv)"; fi

status: venv ## what runs, where
	@$(CTR) status

logs: venv ## logs of LocalStack, MLflow and every function (NAME=<fn> for one, FOLLOW=1 to follow)
	@$(CTR) logs $(NAME) $(if $(FOLLOW),-f,)

deploy: venv ## redeploy template.yaml to the running local cloud
	@$(CTR) deploy

test: venv ## install everything needed and run the whole suite (ruff, mypy, unit, integration, e2e, security)
	@bash infra/ensure-chromium.sh
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/mypy layers/ctr/python/ctr infra/ctr_infra
	@$(MAKE) --no-print-directory test-web
	@$(VENV)/bin/pytest $(PYTEST_ARGS)

test-unit: venv ## unit tests only (no network)
	@$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

test-web: ## unit tests of the page's pure JS modules (node's own test runner, Node 20+)
	@command -v node >/dev/null 2>&1 || { echo "error: node is not installed; the page's unit tests (web/test) need Node.js 20 or newer" >&2; exit 1; }
	@node --test --test-reporter=dot web/test/*.test.js

test-integration: venv ## integration tests on a fresh local cloud
	@$(VENV)/bin/pytest tests/integration $(PYTEST_ARGS)

test-e2e: venv ## browser tests (installs Debian chromium if missing)
	@bash infra/ensure-chromium.sh
	@$(VENV)/bin/pytest tests/e2e $(PYTEST_ARGS)

lint: venv ## ruff, mypy and cfn-lint
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/mypy layers/ctr/python/ctr infra/ctr_infra
	@$(VENV)/bin/cfn-lint template.yaml

security: venv ## cfn-lint + checkov (template, Dockerfile), bandit, secrets scan, IAM and API checks (also in make test)
	@$(VENV)/bin/pytest -v tests/unit/test_security.py tests/unit/test_template.py $(PYTEST_ARGS)

bench: venv ## measure the whole system side by side; writes .local/bench/results.json
	@$(CTR) bench

bench-quick: venv ## a reduced bench (< 3 minutes)
	@$(CTR) bench --quick

soak: venv ## leave the system alone MINUTES (60) on a private cloud with data, faults, traffic; check it
	@$(CTR) soak --minutes $(or $(MINUTES),60)

lock: ## regenerate requirements/dev.lock from a fresh resolve of pyproject's dependencies
	@bash infra/lock.sh

clean: down ## remove the local state (keeps the virtualenvs)
	rm -rf .local/state test-artifacts
