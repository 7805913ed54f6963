# Quickstart: `make run` (install + run the pipeline on the sample corpus), `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export CAD_PIPELINE_DATA ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(CAD_PIPELINE_DATA)/dagster_home
BENCH_CORPUS := $(CAD_PIPELINE_DATA)/bench_corpus

.PHONY: install run test ui bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

run: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/cad-pipeline materialize --scale 1k
	@echo
	@echo "Results: $(CAD_PIPELINE_DATA)/partitions/1k (manifest.parquet, renders.parquet, TinyLLaVA train.json + val.json + images/), corpus in $(CAD_PIPELINE_DATA)/deepcad"
	@echo "Browse runs, lineage and metadata: make ui, then open http://localhost:3000"

test: install
	$(BIN)/pytest -q

ui: install $(DAGSTER_HOME)/dagster.yaml
	@echo "Dagster UI: http://localhost:3000"
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: install
	test -f $(BENCH_CORPUS)/train_val_test_split.json || $(BIN)/cad-pipeline sample --out $(BENCH_CORPUS) --models 500 --seed 1
	$(BIN)/cad-pipeline bench build --corpus cad_pipeline_tests/fixtures/deepcad_samples
	$(BIN)/cad-pipeline bench build --corpus $(BENCH_CORPUS)
	$(BIN)/cad-pipeline bench render --corpus cad_pipeline_tests/fixtures/deepcad_samples
	$(BIN)/cad-pipeline bench render --corpus $(BENCH_CORPUS)
	$(BIN)/cad-pipeline bench conversations --corpus $(BENCH_CORPUS)

clean:
	rm -rf $(VENV) *.egg-info
