"""The evaluation's settings, read by the Dagster config, the CLI flags and the MLflow params alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cad_pipeline.options import check_settings, option


@dataclass(frozen=True)
class EvaluationConfig:
    max_new_tokens: int = option(2048, "tokens generated per answer at most; an answer cut short usually has no closed python block", minimum=1, maximum=2**20)
    generation_batch_size: int = option(8, "validation samples generated together (prompts padded on the left)", minimum=1, maximum=65536)
    generation_batch_budget: float = option(
        300.0,
        "seconds one batch of answers may take (0: no limit); a batch that runs out stops every unfinished answer where it "
        "is, with stop reason `time` (usually no closed python block)",
        minimum=0.0,
    )
    generation_budget: float = option(
        3600.0,
        "seconds the generation of every variant together may take (0: no limit); once spent no further batch starts (the "
        "one under way finishes): the samples left are cut, listed and left out of the scores, and a rerun with the same "
        "adapter and generation settings generates just them",
        minimum=0.0,
    )
    sample_limit: int = option(0, "validation samples evaluated (0: all); taken across models, each model's first view before any second", minimum=0)
    baseline: bool = option(True, "also evaluate the base model without the adapter, so the report shows what the fine-tune changed")
    score_timeout: float = option(120.0, "seconds after which scoring one model's predictions is given up and counted invalid", minimum=0.001)

    def __post_init__(self):
        check_settings(self)

    def to_json(self) -> dict:
        return asdict(self)
