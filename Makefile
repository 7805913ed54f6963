# Quickstart: `make run` (install + run the pipeline on the sample corpus), `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export CAD_PIPELINE_DATA ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(CAD_PIPELINE_DATA)/dagster_home
BENCH_CORPUS := $(CAD_PIPELINE_DATA)/bench_corpus
# The CPU build; put your own (CUDA) torch into $(VENV) first and it is kept.
TORCH ?= torch==2.13.0

.PHONY: install browser run test ui mlflow bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c 'import torch' 2>/dev/null || $(BIN)/pip install --quiet '$(TORCH)'
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

DAGSTER_PORT ?= 3000
MLFLOW_PORT ?= 5000
export CAD_PIPELINE_MLFLOW_UI ?= http://localhost:$(MLFLOW_PORT)
MLFLOW_UI = $(BIN)/mlflow ui --backend-store-uri sqlite:///$(CAD_PIPELINE_DATA)/mlflow/mlflow.db --host 127.0.0.1 --port $(MLFLOW_PORT)

# The demo trains the tiny model for a bounded number of steps and evaluates it on part of the validation
# samples; drop the limits for a full epoch and every validation sample.
RUN_TRAINING ?= --max-steps 60 --learning-rate 1e-3 --validation-samples 24 --plan-steps 8 --plan-warmup 2
RUN_EVALUATION ?= --sample-limit 12 --max-new-tokens 256

run: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/cad-pipeline materialize --scale 1k $(RUN_TRAINING) $(RUN_EVALUATION)
	@echo
	@echo "Results: $(CAD_PIPELINE_DATA)/partitions/1k (manifest.parquet, renders.parquet, TinyLLaVA train.json + val.json + images/, training_plan.json, lora_adapter/, evaluation/), corpus in $(CAD_PIPELINE_DATA)/deepcad"
	@echo "Browse lineage, metadata and runs: make ui, then open http://localhost:$(DAGSTER_PORT) (Dagster) and http://localhost:$(MLFLOW_PORT) (MLflow)"

mlflow: install
	@echo "MLflow UI: http://localhost:$(MLFLOW_PORT)"
	$(MLFLOW_UI)

test: install
	$(BIN)/pytest -q

# Debian's Chromium for the browser test (Playwright drives it; no browser download). Needs root or sudo.
browser:
	command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	  $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core; }

# Both UIs in one terminal; Ctrl-C stops both.
ui: install $(DAGSTER_HOME)/dagster.yaml
	@mkdir -p $(CAD_PIPELINE_DATA)/mlflow
	@echo "Dagster UI: http://localhost:$(DAGSTER_PORT)  (lineage, Materialize, backfills, schedules; instance in $(DAGSTER_HOME))"
	@echo "MLflow UI:  http://localhost:$(MLFLOW_PORT)  (training and evaluation runs; store in $(CAD_PIPELINE_DATA)/mlflow)"
	@$(MLFLOW_UI) & mlflow_pid=$$!; trap 'kill $$mlflow_pid 2>/dev/null' EXIT INT TERM; \
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(DAGSTER_PORT)

bench: install
	test -f $(BENCH_CORPUS)/train_val_test_split.json || $(BIN)/cad-pipeline sample --out $(BENCH_CORPUS) --models 500 --seed 1
	$(BIN)/cad-pipeline bench build --corpus cad_pipeline_tests/fixtures/deepcad_samples
	$(BIN)/cad-pipeline bench build --corpus $(BENCH_CORPUS)
	$(BIN)/cad-pipeline bench render --corpus cad_pipeline_tests/fixtures/deepcad_samples
	$(BIN)/cad-pipeline bench render --corpus $(BENCH_CORPUS)
	$(BIN)/cad-pipeline bench conversations --corpus $(BENCH_CORPUS)
	test -f $(CAD_PIPELINE_DATA)/partitions/1k/train.json || $(BIN)/cad-pipeline materialize --scale 1k --select deepcad_corpus,cad_subset,rendered_views,conversations
	$(BIN)/cad-pipeline bench train --scale 1k
	$(BIN)/cad-pipeline bench plan --scale 1k

clean:
	rm -rf $(VENV) *.egg-info
