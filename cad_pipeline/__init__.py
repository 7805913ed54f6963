"""cad_pipeline: DeepCAD corpora to CAD-code VLM training data, as a Dagster code location."""
