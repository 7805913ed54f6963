"""Faults the pipeline must survive or refuse: here, steps that would ship nothing, and failure rates above the share a
user allows."""

import re

import dagster as dg
import pytest

from cad_pipeline.defs.conversations import ConversationConfig, conversations
from cad_pipeline.defs.data import cad_subset, deepcad_corpus
from cad_pipeline.defs.failures import failed_share_check
from cad_pipeline.defs.render import rendered_views
from cad_pipeline.defs.resources import PipelineSettings

def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    [failure] = [event for event in result.all_events if event.is_step_failure]
    error, messages = failure.step_failure_data.error, []
    while error:
        messages.append(error.message)
        error = error.cause
    return " | ".join(messages)


def test_a_render_step_that_draws_nothing_fails_with_the_reasons(tmp_path):
    """Every model times out: the step fails naming why, and writes no index for training to read."""
    settings = PipelineSettings(data_root=str(tmp_path), sample_models=40, workers=1)
    assert dg.materialize([deepcad_corpus, cad_subset], resources={"settings": settings}, partition_key="full").success
    hopeless = PipelineSettings(data_root=str(tmp_path), sample_models=40, workers=1, model_timeout=1e-4)
    result = dg.materialize([rendered_views], resources={"settings": hopeless}, partition_key="full", raise_on_error=False)
    assert not result.success
    message = _failure_message(result)
    assert re.search(r"no drawing was produced \((timeout|crash): \d+", message), message
    assert not (tmp_path / "partitions" / "full" / "renders.parquet").exists()


def test_conversations_that_keep_no_sample_fail_instead_of_writing_an_empty_train_json(tmp_path):
    settings = PipelineSettings(data_root=str(tmp_path), sample_models=40, workers=1)
    assets = [deepcad_corpus, cad_subset, rendered_views, conversations]
    assert dg.materialize(assets[:3], resources={"settings": settings}, partition_key="full").success
    result = dg.materialize(
        [conversations],
        resources={"settings": settings},
        partition_key="full",
        run_config=dg.RunConfig({"conversations": ConversationConfig(token_budget=1)}),
        raise_on_error=False,
    )
    assert not result.success
    assert re.search(r"no training sample was produced \(over_token_budget: \d+\)", _failure_message(result))
    assert not (tmp_path / "partitions" / "full" / "train.json").exists()


@pytest.mark.parametrize(("failed", "passed"), [(5, True), (6, False)])
def test_the_failed_share_check_blocks_above_the_allowed_share(failed, passed):
    check = failed_share_check("rendered_views", {"timeout": failed - 1, "occ_failure": 1}, 100, 0.05)
    assert check.passed is passed and check.metadata["failed_share"].value == pytest.approx(failed / 100)
    assert check.description == f"{failed}.0% of 100 models failed (allowed: 5.0%)"
