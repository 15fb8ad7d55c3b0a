# The two commands the README names: `make dev` and `make test`.
# Both create .venv on first use and install Chime into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: dev test lint docs bench clean

$(BIN)/chime: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Chime needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

dev: $(BIN)/chime
	$(BIN)/chime dev

test: $(BIN)/chime
	$(BIN)/pytest

lint: $(BIN)/chime
	$(BIN)/ruff check services shared tests bench
	$(BIN)/ruff format --check services shared tests bench

bench: $(BIN)/chime
	$(BIN)/python -m bench.fire_throughput
	$(BIN)/python -m bench.fire_throughput --reader after
	$(BIN)/python -m bench.fire_throughput --reader after --overlap SKIP
	$(BIN)/python -m bench.command_ingest
	$(BIN)/python -m bench.ack_ingest
	$(BIN)/python -m bench.broker_lateness
	$(BIN)/python -m bench.broker_gaps
	$(BIN)/python -m bench.steady_lateness
	$(BIN)/python -m bench.condition_parse

docs: $(BIN)/chime
	$(BIN)/chime docs

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
