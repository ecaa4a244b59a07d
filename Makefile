# make demo: the main job end to end on the embedded defaults (shipped sample, packaged MiniLM teacher,
#            local SQLite tracking store mlflow.db). make test: ruff, then the test suite. Both install on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench ui clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: a requirement that admits a newer torch would download a multi-GB CUDA build
	$(BIN)/pip install -q -c constraints.txt torch
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,onnx,postgres]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/mlflow run . -e demo --env-manager local --experiment-name $${MLFLOW_EXPERIMENT_NAME:-kd_imdb}

test: $(STAMP)
	$(BIN)/ruff check .
	# two worker processes, each taking whole files (module fixtures stay shared within a file)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=25 tests

bench: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/students.py

ui: $(STAMP)
	# the store the commands log to: $$MLFLOW_TRACKING_URI when it names a database, else ./mlflow.db
	$(BIN)/mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}

clean:
	rm -rf mlruns mlflow.db checkpoints .pytest_cache
