# The README's two commands: `make demo` and `make test`. Both build the environment on first use.
LOCK_HASH := $(shell sha256sum requirements.lock | cut -c1-16)
ENV_DIR ?= $(HOME)/.cache/compress/env-$(LOCK_HASH)
PY := $(ENV_DIR)/bin/python
PYTEST_ARGS ?=

.PHONY: env demo test

env:
	@bash scripts/ensure-env.sh "$(ENV_DIR)"

demo: env
	$(ENV_DIR)/bin/compress demo -o compress-demo --force

test: env
	$(PY) -m pytest -q $(PYTEST_ARGS)

