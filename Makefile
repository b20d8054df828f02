# make demo: install, run the quickstart DAG on the local target, print the run.
# make ui: the Airflow UI (api-server) of the demo's Airflow home on 127.0.0.1, with its login.
# make test: install the dev tools and run every check and test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
AIRFLOW_HOME_DEMO ?= $(CURDIR)/.airflow
UI_PORT ?= 8080
DEMO_ENV := AIRFLOW_HOME=$(AIRFLOW_HOME_DEMO) AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags_examples \
	AIRFLOW__CORE__LOAD_EXAMPLES=False MLTRAIN_WORKSPACE=$(AIRFLOW_HOME_DEMO)/mltrain

.PHONY: demo ui test lint typecheck unit test-floor install-demo install-dev constraints clean

UI_ENV := $(DEMO_ENV) AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=$(UI_PORT) \
	AIRFLOW__API__BASE_URL=http://127.0.0.1:$(UI_PORT)
# Asks the simple auth manager for its users' passwords (it generates them once), and prints them.
define UI_LOGIN
import contextlib, io, json
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
with contextlib.redirect_stdout(io.StringIO()):
    SimpleAuthManager().init()
path = SimpleAuthManager.get_generated_password_file()
with open(path) as f:
    for user, password in json.load(f).items():
        print(f"== Login: {user} / {password}   (from {path})")
endef
export UI_LOGIN

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is needed")'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip uv

# Installs pin every library to constraints.txt (see `make constraints`): what the suite last passed
# with, so a library released tomorrow cannot break the demo or CI. Users' own installs are bound
# only by pyproject.toml (and by Airflow's constraints file, as Airflow recommends).
CONSTRAINTS := constraints.txt
$(VENV)/.demo-installed: pyproject.toml $(CONSTRAINTS) | $(PY)
	$(UV) pip install --python $(PY) --quiet -c $(CONSTRAINTS) -e '.[examples]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml $(CONSTRAINTS) | $(PY)
	$(UV) pip install --python $(PY) --quiet -c $(CONSTRAINTS) -e '.[dev,docker,ssh,spark,s3]'
	touch $@ $(VENV)/.demo-installed

# Re-pins constraints.txt: keeps each pin that still satisfies pyproject.toml, picks the newest
# version for the rest (UPGRADE=1: the newest of everything). Run `make test` before committing it.
CONSTRAINT_EXTRAS := dev docker ssh spark s3 sweep examples openlineage
constraints: | $(PY)
	$(UV) pip compile --quiet --universal --python-version 3.10 $(if $(UPGRADE),--upgrade) \
		$(addprefix --extra ,$(CONSTRAINT_EXTRAS)) -o $(CONSTRAINTS) pyproject.toml

install-demo: $(VENV)/.demo-installed
install-dev: $(VENV)/.dev-installed

demo: install-demo
	@mkdir -p $(AIRFLOW_HOME_DEMO)
	@echo "== Airflow home: $(AIRFLOW_HOME_DEMO) (SQLite)"
	@$(DEMO_ENV) $(VENV)/bin/airflow db migrate > $(AIRFLOW_HOME_DEMO)/db-migrate.log 2>&1 \
		|| { cat $(AIRFLOW_HOME_DEMO)/db-migrate.log; exit 1; }
	@echo "== airflow dags test mltrain_quickstart (log: $(AIRFLOW_HOME_DEMO)/dags-test.log)"
	@$(DEMO_ENV) $(VENV)/bin/airflow dags test mltrain_quickstart > $(AIRFLOW_HOME_DEMO)/dags-test.log 2>&1 \
		|| { tail -60 $(AIRFLOW_HOME_DEMO)/dags-test.log; exit 1; }
	@grep -E "DagRun Finished" $(AIRFLOW_HOME_DEMO)/dags-test.log | sed -E 's/.*(state=[a-z]+).*/== DAG run finished: \1/'
	@echo "== The run"
	@$(DEMO_ENV) $(VENV)/bin/mltrain runs show --latest --experiment digits
	@echo "== Look at it again, or at the next ones (the run history is in $(AIRFLOW_HOME_DEMO)/mltrain):"
	@echo "   export MLTRAIN_WORKSPACE=$(AIRFLOW_HOME_DEMO)/mltrain"
	@echo "   $(VENV)/bin/mltrain runs list --experiment digits"
	@echo "   $(VENV)/bin/mltrain logs RUN_ID          # RUN_ID: the first column of runs list"
	@echo "   $(VENV)/bin/mltrain metrics RUN_ID"
	@echo "== In the Airflow UI: make ui   (then http://127.0.0.1:$(UI_PORT)/mltrain/, 'ML Training' in the menu)"

# The Airflow UI of the demo's home: a migrated database, the simple auth manager's generated login
# (Airflow writes it to $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated; printed here),
# then the api-server in the foreground on 127.0.0.1 only. Ctrl-C stops it.
ui: install-demo
	@mkdir -p $(AIRFLOW_HOME_DEMO)
	@$(DEMO_ENV) $(VENV)/bin/airflow db migrate > $(AIRFLOW_HOME_DEMO)/db-migrate.log 2>&1 \
		|| { cat $(AIRFLOW_HOME_DEMO)/db-migrate.log; exit 1; }
	@$(UI_ENV) $(PY) -c "$$UI_LOGIN" 2> $(AIRFLOW_HOME_DEMO)/ui-login.log \
		|| { cat $(AIRFLOW_HOME_DEMO)/ui-login.log; exit 1; }
	@echo "== Airflow UI: http://127.0.0.1:$(UI_PORT)/  (runs: http://127.0.0.1:$(UI_PORT)/mltrain/)"
	@echo "== api-server log below; Ctrl-C stops it"
	@$(UI_ENV) exec $(VENV)/bin/airflow api-server --host 127.0.0.1 --port $(UI_PORT)

lint: install-dev
	$(VENV)/bin/ruff check airflow_provider_mltrain tests dags_examples $(wildcard bench)
	$(VENV)/bin/ruff format --check airflow_provider_mltrain tests dags_examples $(wildcard bench)
	@# The runner travels to targets with any Python >= 3.9: keep its syntax there.
	$(VENV)/bin/ruff check --target-version py39 --select E9,F,UP airflow_provider_mltrain/runner

typecheck: install-dev
	$(VENV)/bin/mypy airflow_provider_mltrain

# Services the tests use (tests/services/*.sh) run for real on 127.0.0.1, installed and started
# here. In CI a service that cannot start fails the run; elsewhere its tests skip with a reason.
# The tests run in PYTEST_WORKERS pytest-xdist workers (0: in this process, one at a time). Most of
# them wait on subprocesses and services rather than compute, so 1.5x the CPU count pays off on
# small machines (2x timed tests out on a loaded 2-core VM); conftest.py keeps the tests that run jobs
# on the Spark cluster in one worker. The slowest tests are listed at the end (--durations).
PYTEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n * 3 / 2 < 8 ? n * 3 / 2 : 8 )))
unit: install-dev
	@services=$$(bash tests/services/start-all.sh) || exit 1; \
	eval "$$services"; $(PY) -m pytest -q -n $(PYTEST_WORKERS) --durations=40

# The lowest Airflow that pyproject.toml allows (apache-airflow>=FLOOR_AIRFLOW), with the lowest task
# SDK it allows and every other library as it was on its release day (uv --exclude-newer: what its
# users installed then), in a venv of its own: the operator, deferrable and sensor DAG tests run
# there too. uv's cache makes the install take seconds after the first time.
FLOOR_AIRFLOW := 3.1.0
FLOOR_TASK_SDK := 1.1.0
FLOOR_DATE := 2025-09-27
FLOOR_VENV := .venv-floor

$(FLOOR_VENV)/.installed: pyproject.toml Makefile | $(PY)
	rm -rf $(FLOOR_VENV)
	$(UV) venv --quiet --python $(PY) $(FLOOR_VENV)
	$(UV) pip install --python $(FLOOR_VENV)/bin/python --quiet --exclude-newer $(FLOOR_DATE) -e '.[examples]' \
		'apache-airflow==$(FLOOR_AIRFLOW)' 'apache-airflow-task-sdk==$(FLOOR_TASK_SDK)' 'pytest>=8' 'pytest-timeout>=2.3'
	touch $@

test-floor: $(FLOOR_VENV)/.installed
	$(FLOOR_VENV)/bin/python -c 'import airflow, airflow.sdk, importlib.metadata as m; \
		print("== Airflow", airflow.__version__, "task SDK", m.version("apache-airflow-task-sdk"))'
	$(FLOOR_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_dags.py \
		-k 'provider_is_registered or quickstart or failing or timeout or deferrable or sensors'

# The parts at once: lint and typecheck while the services start, the floor's venv and tests beside
# the main suite. Each part's output is shown whole when it ends (--output-sync); every part runs to
# its end (--keep-going) and any failure fails `make test`.
test: install-dev
	@$(MAKE) --no-print-directory --jobs=4 --output-sync=target --keep-going lint typecheck unit test-floor

clean:
	rm -rf $(AIRFLOW_HOME_DEMO) .pytest_cache .mypy_cache .ruff_cache
