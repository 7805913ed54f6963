"""Settings are checked where they enter: a bad value gives one line naming the setting, the value and what is allowed;
exit 2 on the command line, a failed run (before any work) in Dagster, never a traceback."""

import math
import os

import dagster as dg
import pytest

from cad_pipeline.cli import main
from cad_pipeline.defs.render import RenderConfig, rendered_views
from cad_pipeline.defs.resources import PipelineSettings
from cad_pipeline.defs.training import TrainingConfig
from cad_pipeline.evaluate.config import EvaluationConfig
from cad_pipeline.options import SettingError
from cad_pipeline.render.batch import RenderSettings
from cad_pipeline.train.config import TrainConfig
from cad_pipeline_tests.conftest import REAL_SAMPLES
from cad_pipeline_tests.test_cli import _run


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"batch_size": 0}, "batch_size 0: must be at least 1 and at most 65536"),
        ({"gradient_accumulation": -2}, "gradient_accumulation -2: must be at least 1"),
        ({"lora_rank": 0}, "lora_rank 0: must be at least 1"),
        ({"lora_alpha": 0}, "lora_alpha 0: must be at least 1"),
        ({"learning_rate": math.nan}, "learning_rate nan: must be a finite number"),
        ({"learning_rate": -1e-4}, "learning_rate -0.0001: must be at least 0"),
        ({"max_length": -1}, "max_length -1: must be at least 0"),
        ({"warmup_ratio": 1.5}, "warmup_ratio 1.5: must be at most 1"),
        ({"train_mode": "partial"}, "train_mode 'partial': must be one of auto, lora, full"),
        ({"packing": "yes"}, "packing 'yes': must be one of auto, on, off"),
        ({"dtype": "fp8"}, "dtype 'fp8': must be one of auto, bf16, fp16, fp32"),
    ],
)
def test_training_settings_out_of_range_are_refused_with_the_range(settings, message):
    with pytest.raises(SettingError) as refused:
        TrainConfig(**settings)
    assert str(refused.value).startswith(message)


def test_evaluation_and_render_settings_out_of_range_are_refused():
    with pytest.raises(SettingError, match="max_new_tokens 0: must be at least 1"):
        EvaluationConfig(max_new_tokens=0)
    with pytest.raises(SettingError, match="generation_budget -1.0: must be at least 0"):
        EvaluationConfig(generation_budget=-1.0)
    for size in (0, 100_000):
        with pytest.raises(SettingError, match=f"size {size}: must be at least 32 and at most 4096 pixels"):
            RenderSettings(size=size)
    with pytest.raises(SettingError, match=r"views \['front', 'side'\]: unknown views"):
        RenderSettings(views=("front", "side"))
    assert TrainConfig(max_length=0, learning_rate=0.0).max_length == 0  # the limits themselves are allowed


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["train", "--scale", "1k", "--batch-size", "0"], "batch_size 0: must be at least 1"),
        (["train", "--scale", "1k", "--learning-rate", "nan"], "learning_rate nan: must be a finite number"),
        (["estimate", "--scale", "1k", "--lora-rank", "0"], "lora_rank 0: must be at least 1"),
        (["train", "--scale", "1k", "--max-length", "-5"], "max_length -5: must be at least 0"),
        (["materialize", "--scale", "1k", "--max-new-tokens", "0"], "max_new_tokens 0: must be at least 1"),
    ],
)
def test_a_bad_setting_on_the_command_line_is_one_line_and_exit_2_before_any_work(arguments, message, capsys):
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"cad-pipeline: error: {message}") and error.count("\n") == 1


def test_a_bad_number_flag_is_refused_by_the_parser_in_one_line(capsys, tmp_path):
    for arguments, message in (
        (["render", str(tmp_path), "--out", str(tmp_path / "out"), "--workers", "-3"], "argument --workers: -3: must be at least 0"),
        (["bench", "train", "--scale", "1k", "--steps", "zero"], "argument --steps: 'zero' is not an integer"),
    ):
        with pytest.raises(SystemExit) as exited:
            main(arguments)
        error = capsys.readouterr().err
        assert exited.value.code == 2 and error.count("\n") == 1 and message in error, error
    assert main(["render", str(REAL_SAMPLES), "--out", str(tmp_path / "out"), "--size", "100000"]) == 2
    assert "size 100000: must be at least 32 and at most 4096 pixels" in capsys.readouterr().err


def test_a_bad_scales_variable_is_one_line_naming_the_variable(tmp_path):
    result = _run("materialize", "--scale", "1k", env={**os.environ, "CAD_PIPELINE_SCALES": "1k,abc", "CAD_PIPELINE_DATA": str(tmp_path)})
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr == "cad-pipeline: error: CAD_PIPELINE_SCALES='1k,abc': scale 'abc' is not a count like 1k, 10k, 2.5k, 1m, 500 or 'full'\n"


def test_dagster_refuses_an_out_of_range_setting_before_the_step_works(tmp_path):
    """The config is refused when the step starts, before it reads anything: here there is not even a corpus."""
    for config_class, field in ((TrainingConfig, "batch_size"), (RenderConfig, "size")):
        with pytest.raises(Exception, match=field) as refused:
            config_class(**{field: 0})
        assert "greater than or equal to" in str(refused.value)
    settings = PipelineSettings(data_root=str(tmp_path / "data"), corpus_dir=str(tmp_path / "no_corpus"))
    result = dg.materialize(
        [rendered_views],
        resources={"settings": settings},
        partition_key="1k",
        run_config={"ops": {"rendered_views": {"config": {"size": 0}}}},
        raise_on_error=False,
    )
    assert not result.success and not result.get_asset_materialization_events()
    [failure] = [event for event in result.all_events if event.is_step_failure]
    error, messages = failure.step_failure_data.error, []
    while error:
        messages.append(error.message)
        error = error.cause
    assert any("size" in message and "greater than or equal to 32" in message for message in messages), messages
