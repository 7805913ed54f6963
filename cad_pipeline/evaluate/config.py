"""The evaluation's settings, read by the Dagster config, the CLI flags and the MLflow params alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cad_pipeline.options import option


@dataclass(frozen=True)
class EvaluationConfig:
    max_new_tokens: int = option(2048, "tokens generated per answer at most; an answer cut short usually has no closed python block")
    generation_batch_size: int = option(8, "validation samples generated together (prompts padded on the left)")
    sample_limit: int = option(0, "validation samples evaluated (0: all); taken across models, each model's first view before any second")
    baseline: bool = option(True, "also evaluate the base model without the adapter, so the report shows what the fine-tune changed")
    score_timeout: float = option(120.0, "seconds after which scoring one model's predictions is given up and counted invalid")

    def to_json(self) -> dict:
        return asdict(self)
