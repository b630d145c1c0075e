# BigLedger CRM. `make run` serves the product on http://127.0.0.1:8080; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8080
export BIGLEDGER_INSTANCE_PATH ?= $(CURDIR)/instance

.PHONY: run test install catalogs extract update-catalogs clean

$(STAMP): setup.cfg constraints.txt pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11 or newer is needed") if sys.version_info < (3, 11) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP) catalogs

catalogs: $(STAMP)
	$(BIN)/pybabel compile -d translations -f --statistics 2>&1 | tail -n 2

run: install
	BIGLEDGER_ENV=$${BIGLEDGER_ENV:-development} $(BIN)/bigledger db upgrade
	BIGLEDGER_ENV=$${BIGLEDGER_ENV:-development} $(BIN)/bigledger create-admin --if-missing
	BIGLEDGER_ENV=$${BIGLEDGER_ENV:-development} $(BIN)/bigledger demo
	BIGLEDGER_ENV=$${BIGLEDGER_ENV:-development} $(BIN)/bigledger run --host $(HOST) --port $(PORT)

test: install
	@if [ ! -x /usr/bin/chromium ]; then echo "NOTICE: /usr/bin/chromium is missing: real-browser tests will be skipped (apt-get install chromium)"; fi
	@if [ ! -x /usr/sbin/dovecot ]; then echo "NOTICE: /usr/sbin/dovecot is missing: real IMAP server tests will be skipped (apt-get install dovecot-imapd)"; fi
	$(BIN)/python -m pytest -n 4 $(PYTEST_ARGS)

extract: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k _l -k lazy_gettext -k _ -o translations/messages.pot --no-location --sort-output --project "BigLedger CRM" .

update-catalogs: extract
	$(BIN)/pybabel update -i translations/messages.pot -d translations --no-fuzzy-matching

clean:
	rm -rf $(VENV) instance
