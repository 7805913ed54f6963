"""The evaluation around the model: validation samples picked across models, answers scored in sandboxes of a
real process pool against real OpenCASCADE solids, the aggregates and their markdown table, and the gallery; samples
the generation budget cut are listed and counted but never scored."""

import json
import math
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from cad_pipeline.cad.deepcad_json import read_file
from cad_pipeline.cad.errors import ModelError
from cad_pipeline.cad.openecad.writer import write_code
from cad_pipeline.dataset.conversations import conversation
from cad_pipeline.dataset.corpus import model_path
from cad_pipeline.partition import MANIFEST
from cad_pipeline.evaluate.code_scores import curve_accuracy, extract_code, loop_accuracy
from cad_pipeline.evaluate.evaluation import (
    ADAPTER,
    AGGREGATES,
    BASE,
    CUT,
    aggregate,
    aggregates_markdown,
    evaluation_samples,
    gallery_samples,
    score_answers,
)
from cad_pipeline.evaluate.gallery import CELL, DrawJob, draw_row, no_solid_cell
from cad_pipeline.evaluate.generate import END_TOKEN, TIME, TOKEN_LIMIT, Answer
from cad_pipeline.parallel import process_pool
from cad_pipeline.render.batch import image_file_name
from cad_pipeline_tests.conftest import REAL_SAMPLES

VIEWS = ("front", "top", "right")
SCORE_TIMEOUT = 60.0


def valid_models(names: tuple[str, ...]) -> dict[str, str]:
    """Bucketed id -> OpenECAD code of those real samples that build."""
    models = {}
    for name in names:
        try:
            models[f"{name[:4]}/{name}"] = write_code(read_file(REAL_SAMPLES / f"{name}.json"))
        except ModelError:
            continue
    return models


MODELS = valid_models(("00000061", "00000119", "00000175", "00003877"))
"""Three models (00000175 selects no profile and is left out) whose code rebuilds them with the same mesh, so
their own code samples the same points; a circle's mesh can come back in another triangle order, which puts the
Chamfer distance of the truth's own code at the sampling noise, about 1e-4, rather than 0."""
MODEL_IDS = list(MODELS)


def sample_id(model_id: str, view: str) -> str:
    return image_file_name(model_id, view).removesuffix(".png")


def record(model_id: str, view: str, code: str) -> dict:
    return conversation(sample_id(model_id, view), image_file_name(model_id, view), "per_view", code)


def write_partition(folder, manifest_ids, selected, records):
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": manifest_ids, "selected": selected}).to_parquet(folder / MANIFEST)
    (folder / "val.json").write_text(json.dumps(records))
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for model_id in MODEL_IDS:
        target = model_path(root, model_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REAL_SAMPLES / f"{model_id.split('/')[1]}.json", target)
    return root


@pytest.fixture(scope="module")
def partition(tmp_path_factory):
    """Three models with three views each, their records model by model as conversations are written."""
    records = [record(model_id, view, code) for model_id, code in MODELS.items() for view in VIEWS]
    return write_partition(tmp_path_factory.mktemp("partition"), MODEL_IDS, [True] * len(MODEL_IDS), records)


@pytest.fixture(scope="module")
def pool():
    with process_pool(2) as executor:
        yield executor


def test_all_samples_come_first_views_first(partition, corpus):
    """A limit of 0 keeps every sample, reordered so each model's first view precedes any model's second."""
    samples = evaluation_samples(partition, corpus, 0)
    assert [s.id for s in samples] == [sample_id(model_id, view) for view in VIEWS for model_id in MODEL_IDS]


def test_a_small_limit_covers_every_model_before_a_second_view(partition, corpus):
    samples = evaluation_samples(partition, corpus, 4)
    expected = [sample_id(model_id, VIEWS[0]) for model_id in MODEL_IDS] + [sample_id(MODEL_IDS[0], VIEWS[1])]
    assert [s.id for s in samples] == expected


def test_each_sample_knows_its_model_truth_file_and_truth_code(partition, corpus):
    owners = {sample_id(model_id, view): model_id for model_id in MODEL_IDS for view in VIEWS}
    samples = evaluation_samples(partition, corpus, 0)
    assert len(samples) == len(owners)
    for sample in samples:
        model_id = owners[sample.id]
        assert sample.model_id == model_id
        assert sample.truth_file == model_path(corpus, model_id) and sample.truth_file.is_file()
        assert sample.truth_code == extract_code(sample.record["conversations"][1]["value"])
        assert sample.truth_code.strip() == MODELS[model_id].strip()


@pytest.mark.parametrize("selected", [None, False], ids=["absent_from_manifest", "not_selected"])
def test_a_record_of_no_manifest_model_is_refused_by_name(tmp_path, corpus, selected):
    """Conversations from another scale's subset must not be scored against the wrong ground truth."""
    stranger = "0000/00000172"
    manifest_ids = MODEL_IDS if selected is None else [*MODEL_IDS, stranger]
    stray = record(stranger, "top", "x = 1\n")
    records = [record(MODEL_IDS[0], "front", MODELS[MODEL_IDS[0]]), stray]
    flags = [True] * len(MODEL_IDS) + ([] if selected is None else [False])
    folder = write_partition(tmp_path / "partition", manifest_ids, flags, records)
    with pytest.raises(ValueError, match=re.escape(f"record {stray['id']} shows {stray['image']}")):
        evaluation_samples(folder, corpus, 0)


def truth_answer(sample) -> str:
    return sample.record["conversations"][1]["value"]


def answered(text: str, stop_reason: str = END_TOKEN, new_tokens: int = 300, seconds: float = 2.5) -> Answer:
    return Answer(stop_reason, new_tokens, seconds, text)


@pytest.fixture(scope="module")
def scored(partition, corpus, pool, tmp_path_factory):
    """The adapter answers each sample with its own truth; the base answers hostile code, prose, and code that
    cuts before any body exists."""
    samples = evaluation_samples(partition, corpus, len(MODEL_IDS))
    sentinel = tmp_path_factory.mktemp("hostile") / "SENTINEL"
    cut_first = samples[2].truth_code.replace("operation= 0", "operation= 2", 1)
    assert cut_first != samples[2].truth_code
    answers = {
        ADAPTER: [answered(truth_answer(sample)) for sample in samples],
        BASE: [
            answered(f'Here you go:\n```python\nimport os\nos.system("touch {sentinel}")\n```'),
            answered("I am sorry, I cannot write code for this picture.", TIME, 41, 300.2),
            answered(f"Of course, here are the codes:\n```python{cut_first}```", TOKEN_LIMIT, 2048),
        ],
    }
    return samples, score_answers(samples, answers, pool, SCORE_TIMEOUT), sentinel


def test_the_truths_own_answers_score_perfectly(scored):
    samples, table, _ = scored
    adapter = table[table.variant == ADAPTER]
    assert list(adapter.sample_id) == [s.id for s in samples] and list(adapter.model_id) == [s.model_id for s in samples]
    assert list(adapter.image) == [s.record["image"] for s in samples]
    assert adapter.valid.all() and adapter.failure.isna().all()
    assert adapter.iou.to_numpy() == pytest.approx(1.0, abs=1e-5)
    assert (adapter.chamfer_deepcad_paired < 1e-9).all() and (adapter.chamfer_cad_recode_paired < 1e-9).all()
    assert (adapter.chamfer_deepcad > 1e-5).all(), "drawn independently, as the papers do, a perfect answer scores the sampling floor"
    assert (adapter.command_accuracy == 1.0).all() and (adapter.parameter_accuracy == 1.0).all()
    assert (adapter.curve_accuracy == 100.0).all() and (adapter.loop_accuracy == 100.0).all()
    assert list(adapter.code) == [s.truth_code for s in samples]
    assert list(adapter.stop_reason) == [END_TOKEN] * 3 and list(adapter.new_tokens) == [300] * 3 and list(adapter.generation_seconds) == [2.5] * 3


def test_bad_base_answers_are_invalid_with_their_reason_and_nothing_ran(scored):
    samples, table, sentinel = scored
    base = table[table.variant == BASE]
    assert list(base.sample_id) == [s.id for s in samples]
    assert not base.valid.any() and base.iou.isna().all() and base.command_accuracy.isna().all()
    failures = list(base.failure)
    assert failures[0].startswith("code_rejected") and failures[1].startswith("no_code") and failures[2].startswith("no_solid")
    assert not sentinel.exists()
    assert pd.isna(base.code.iloc[1])
    assert list(base.curve_accuracy) == [0.0, 0.0, 100.0] and list(base.loop_accuracy) == [0.0, 0.0, 100.0]
    assert list(base.stop_reason) == [END_TOKEN, TIME, TOKEN_LIMIT] and list(base.new_tokens) == [300, 41, 2048]
    assert list(base.generation_seconds) == [2.5, 300.2, 2.5]


def test_aggregates_of_perfect_and_failed_answers(scored):
    _, table, _ = scored
    result = aggregate(table)
    assert list(result) == [ADAPTER, BASE]
    adapter, base = result[ADAPTER], result[BASE]
    assert adapter["samples"] == 3.0 and adapter["invalid_ratio_pct"] == 0.0 and adapter["samples_cut"] == 0.0
    assert (adapter["stopped_end_token"], adapter["stopped_token_limit"], adapter["stopped_time"]) == (3.0, 0.0, 0.0)
    assert (base["stopped_end_token"], base["stopped_token_limit"], base["stopped_time"]) == (1.0, 1.0, 1.0)
    assert adapter["command_accuracy_pct"] == 100.0 and adapter["parameter_accuracy_pct"] == 100.0
    assert adapter["iou_mean_pct"] == pytest.approx(100.0, abs=1e-3) and adapter["iou_median_pct"] == pytest.approx(100.0, abs=1e-3)
    assert adapter["chamfer_deepcad_paired_median_x1e3"] == pytest.approx(0.0, abs=1e-6)
    assert adapter["chamfer_cad_recode_paired_median_x1e3"] == pytest.approx(0.0, abs=1e-6)
    assert base["samples"] == 3.0 and base["invalid_ratio_pct"] == 100.0 * 3 / 3
    geometric = [name for name, (statistic, *_) in AGGREGATES.items() if statistic in ("mean", "median")]
    assert all(math.isnan(base[name]) for name in geometric)
    assert base["curve_accuracy_pct"] == pytest.approx(100.0 / 3) and base["loop_accuracy_pct"] == pytest.approx(100.0 / 3)


def test_answers_whose_scoring_times_out_keep_their_code_scores(partition, corpus, pool):
    """A sandbox that gives no result in time is killed; the sample is invalid but still counted from its text."""
    samples = evaluation_samples(partition, corpus, len(MODEL_IDS))
    truncated = samples[1].truth_code[: samples[1].truth_code.index("add_loop")]
    answers = [truth_answer(samples[0]), f"```python{truncated}```", "no code at all"]
    table = score_answers(samples, {ADAPTER: [answered(answer) for answer in answers]}, pool, 1e-4)
    assert not table.valid.any() and table.iou.isna().all()
    assert all(failure.startswith("no_solid") and "timeout" in failure for failure in table.failure)
    expected_curves = [curve_accuracy(extract_code(answer), sample.truth_code) for answer, sample in zip(answers, samples)]
    expected_loops = [loop_accuracy(extract_code(answer), sample.truth_code) for answer, sample in zip(answers, samples)]
    assert list(table.curve_accuracy) == expected_curves and list(table.loop_accuracy) == expected_loops
    assert expected_curves[0] == 100.0 and expected_loops[1] == 0.0


def test_cut_samples_keep_their_rows_but_are_neither_scored_nor_aggregated(partition, corpus, pool):
    """The adapter answered two samples and had the third cut; the base had all three cut."""
    samples = evaluation_samples(partition, corpus, len(MODEL_IDS))
    answers = {ADAPTER: [answered(truth_answer(samples[0])), None, answered("no code at all", TIME, 7, 300.1)], BASE: [None, None, None]}
    table = score_answers(samples, answers, pool, SCORE_TIMEOUT)
    assert list(zip(table.variant, table.sample_id)) == [(variant, s.id) for variant in (ADAPTER, BASE) for s in samples]
    cut = table[table.stop_reason == CUT]
    assert list(zip(cut.variant, cut.sample_id)) == [(ADAPTER, samples[1].id)] + [(BASE, s.id) for s in samples]
    assert not cut.valid.any() and all(failure.startswith("cut:") for failure in cut.failure)
    assert cut.answer.isna().all() and cut.code.isna().all() and cut.iou.isna().all() and cut.curve_accuracy.isna().all()
    assert (cut.new_tokens == 0).all() and (cut.generation_seconds == 0.0).all()
    answered_rows = table[table.stop_reason != CUT]
    assert list(answered_rows.valid) == [True, False] and list(answered_rows.stop_reason) == [END_TOKEN, TIME]

    result = aggregate(table)
    adapter, base = result[ADAPTER], result[BASE]
    assert (adapter["samples"], adapter["samples_cut"], adapter["invalid_ratio_pct"], adapter["curve_accuracy_pct"]) == (2.0, 1.0, 50.0, 50.0)
    assert (adapter["stopped_end_token"], adapter["stopped_token_limit"], adapter["stopped_time"]) == (1.0, 0.0, 1.0)
    assert adapter["iou_mean_pct"] == pytest.approx(100.0, abs=1e-3), "the mean of the one valid sample"
    assert (base["samples"], base["samples_cut"], base["stopped_end_token"]) == (0.0, 3.0, 0.0)
    assert all(math.isnan(base[name]) for name, (statistic, *_) in AGGREGATES.items() if statistic not in ("count", "cut", "stopped"))
    rows = {line.split("|")[1].strip(): line for line in aggregates_markdown(result).splitlines()}
    assert rows["samples_cut"].startswith("| samples_cut | 1 | 3 |  |") and rows["invalid_ratio_pct"].startswith("| invalid_ratio_pct | 50 | n/a | n/a |")


def score_row(variant, name, valid, scores, curve, loop, stop_reason=END_TOKEN):
    """One row as `score_answers` writes it; scores = (command, parameter, chamfer_deepcad, chamfer_cad_recode, iou).
    The paired Chamfer distances are a tenth of the independent ones, as a better-matched reading would be."""
    command, parameter, chamfer_deepcad, chamfer_cad_recode, iou = scores
    paired = {
        "chamfer_deepcad_paired": None if chamfer_deepcad is None else chamfer_deepcad / 10,
        "chamfer_cad_recode_paired": None if chamfer_cad_recode is None else chamfer_cad_recode / 10,
    }
    return {
        "variant": variant, "sample_id": name, "model_id": f"0000/{name}", "image": f"0000_{name}_front.png",
        "valid": valid, "failure": None if valid else "no_solid: hand-made", "command_accuracy": command,
        "parameter_accuracy": parameter, "chamfer_deepcad": chamfer_deepcad, "chamfer_cad_recode": chamfer_cad_recode,
        **paired, "iou": iou, "curve_accuracy": curve, "loop_accuracy": loop, "stop_reason": stop_reason, "new_tokens": 10,
        "generation_seconds": 1.0, "answer": "", "code": None,
    }  # fmt: skip


def test_aggregates_of_hand_made_scores():
    """Means and medians differ on these numbers; the invalid row carries scores that would move every geometric
    mean if it were wrongly included, and the cut rows scores that would move every number."""
    table = pd.DataFrame(
        [
            score_row(ADAPTER, "a", True, (1.0, 0.9, 0.001, 0.003, 0.2), 100.0, 100.0),
            score_row(ADAPTER, "b", True, (0.5, 0.6, 0.002, 0.004, 0.4), 50.0, 100.0, TOKEN_LIMIT),
            score_row(ADAPTER, "c", True, (0.75, 0.3, 0.009, 0.011, 0.9), 80.0, 50.0),
            score_row(ADAPTER, "d", False, (0.0, 0.0, 5.0, 5.0, 0.0), 10.0, 50.0, TIME),
            score_row(ADAPTER, "e", False, (None, None, None, None, None), 0.0, 0.0, TIME),
            score_row(ADAPTER, "f", True, (0.0, 0.0, 9.0, 9.0, 0.0), 0.0, 0.0, CUT),
            score_row(BASE, "a", False, (None, None, None, None, None), 40.0, 100.0),
            score_row(BASE, "b", True, (0.25, 0.5, 0.004, 0.006, 0.8), 20.0, 0.0),
            score_row(BASE, "c", False, (None, None, None, None, None), 0.0, 0.0, CUT),
            score_row(BASE, "d", False, (None, None, None, None, None), 0.0, 0.0, CUT),
        ]
    )
    result = aggregate(table)
    assert result[ADAPTER] == pytest.approx(
        {
            "samples": 5.0,
            "samples_cut": 1.0,
            "stopped_end_token": 2.0,
            "stopped_token_limit": 1.0,
            "stopped_time": 2.0,
            "invalid_ratio_pct": 40.0,
            "command_accuracy_pct": 75.0,
            "parameter_accuracy_pct": 60.0,
            "chamfer_deepcad_median_x1e3": 2.0,
            "chamfer_deepcad_mean_x1e3": 4.0,
            "chamfer_cad_recode_median_x1e3": 4.0,
            "chamfer_cad_recode_mean_x1e3": 6.0,
            "chamfer_deepcad_paired_median_x1e3": 0.2,
            "chamfer_cad_recode_paired_median_x1e3": 0.4,
            "iou_mean_pct": 50.0,
            "iou_median_pct": 40.0,
            "curve_accuracy_pct": 48.0,
            "loop_accuracy_pct": 60.0,
        }
    )
    assert result[BASE] == pytest.approx(
        {
            "samples": 2.0,
            "samples_cut": 2.0,
            "stopped_end_token": 2.0,
            "stopped_token_limit": 0.0,
            "stopped_time": 0.0,
            "invalid_ratio_pct": 50.0,
            "command_accuracy_pct": 25.0,
            "parameter_accuracy_pct": 50.0,
            "chamfer_deepcad_median_x1e3": 4.0,
            "chamfer_deepcad_mean_x1e3": 4.0,
            "chamfer_cad_recode_median_x1e3": 6.0,
            "chamfer_cad_recode_mean_x1e3": 6.0,
            "chamfer_deepcad_paired_median_x1e3": 0.4,
            "chamfer_cad_recode_paired_median_x1e3": 0.6,
            "iou_mean_pct": 80.0,
            "iou_median_pct": 80.0,
            "curve_accuracy_pct": 30.0,
            "loop_accuracy_pct": 50.0,
        }
    )


UNESCAPED_BAR = re.compile(r"(?<!\\)\|")


def test_the_markdown_table_shows_the_change_and_keeps_its_columns():
    names = list(AGGREGATES)
    adapter = {name: 10.0 + index * 1.5 for index, name in enumerate(names)}
    base = {name: 2.25 * index for index, name in enumerate(names)}
    adapter["chamfer_deepcad_mean_x1e3"] = math.nan
    base["iou_median_pct"] = math.nan
    lines = aggregates_markdown({ADAPTER: adapter, BASE: base}).splitlines()
    header = [cell.strip() for cell in UNESCAPED_BAR.split(lines[0])[1:-1]]
    assert header == ["metric", ADAPTER, BASE, "adapter - base", "protocol"]
    assert len(lines) == 2 + len(names)
    assert {len(UNESCAPED_BAR.findall(line)) for line in lines} == {len(header) + 1}
    rows = {cells[0]: cells for cells in ([c.strip() for c in UNESCAPED_BAR.split(line)[1:-1]] for line in lines[2:])}
    assert list(rows) == names
    for name in names:
        change = rows[name][3]
        if name in ("samples", "samples_cut"):
            assert change == ""
        elif name in ("chamfer_deepcad_mean_x1e3", "iou_median_pct"):
            assert change == "n/a"
        else:
            assert float(change.replace(",", "")) == pytest.approx(adapter[name] - base[name], rel=1e-3)
    assert rows["parameter_accuracy_pct"][4].count(r"\|") == 2  # "|diff| < 3" kept whole inside its cell


def test_the_gallery_shows_the_best_median_and_worst_adapter_samples():
    """Base rows, however good, and cut samples, which would rank last, never enter the adapter's gallery."""
    no_scores = (None, None, None, None, None)
    table = pd.DataFrame(
        [
            score_row(ADAPTER, "a", True, (1.0, 1.0, 0.001, 0.001, 0.9), 100.0, 100.0),
            score_row(ADAPTER, "b", True, (1.0, 1.0, 0.001, 0.001, 0.5), 100.0, 100.0),
            score_row(ADAPTER, "c", True, (1.0, 1.0, 0.001, 0.001, 0.7), 100.0, 100.0),
            score_row(ADAPTER, "d", False, no_scores, 0.0, 0.0),
            score_row(ADAPTER, "e", True, (1.0, 1.0, 0.001, 0.001, 0.3), 100.0, 100.0),
            score_row(ADAPTER, "f", False, no_scores, math.nan, math.nan, CUT),
            score_row(ADAPTER, "g", False, no_scores, math.nan, math.nan, CUT),
            score_row(BASE, "z", True, (1.0, 1.0, 0.0, 0.0, 1.0), 100.0, 100.0),
            score_row(BASE, "a", False, no_scores, 0.0, 0.0),
        ]
    )
    assert gallery_samples(table) == [("best", "a"), ("median", "b"), ("worst", "d")]


def test_a_gallery_of_few_samples_repeats_none():
    table = pd.DataFrame(
        [
            score_row(ADAPTER, "a", True, (1.0, 1.0, 0.001, 0.001, 0.4), 100.0, 100.0),
            score_row(ADAPTER, "b", True, (1.0, 1.0, 0.001, 0.001, 0.8), 100.0, 100.0),
        ]
    )
    assert gallery_samples(table) == [("best", "b"), ("worst", "a")]
    assert gallery_samples(table[table.sample_id == "a"]) == [("best", "a")]


def test_a_gallery_row_draws_the_truth_its_own_code_and_crosses_out_the_rest(corpus):
    """The truth's code redraws the truth exactly; no code and unreadable code both show the crossed cell."""
    model_id = MODEL_IDS[-1]
    row = draw_row(DrawJob(str(model_path(corpus, model_id)), (MODELS[model_id], None, "garbage")))
    assert len(row) == 4
    assert all(cell.dtype == np.uint8 and cell.shape == (CELL, CELL) for cell in row)
    truth, own_code, no_code, garbage = row
    assert np.array_equal(truth, own_code)
    assert truth.min() < truth.max() and not np.array_equal(truth, no_solid_cell())
    assert np.array_equal(no_code, no_solid_cell()) and np.array_equal(garbage, no_solid_cell())
