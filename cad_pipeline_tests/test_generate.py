"""Generation with the training prompt: batched with left padding, it gives each record the answer it gets alone;
every answer says why it stopped, time budgets end it, and an evaluation's answers file keeps what was generated
so that a rerun generates only what is missing."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cad_pipeline.evaluate import evaluation
from cad_pipeline.evaluate.answers import AnswersFile, generation_fingerprint
from cad_pipeline.evaluate.config import EvaluationConfig
from cad_pipeline.evaluate.evaluation import ADAPTER, BASE, EvaluationSample, generate
from cad_pipeline.evaluate.generate import END_TOKEN, TIME, TOKEN_LIMIT, Answer, generate_answers
from cad_pipeline.train.config import TrainConfig
from cad_pipeline.train.data import open_images, prompt_text, question_and_answer
from cad_pipeline.train.model import TrainedModel, add_lora, load_base_model, resolved_max_length
from cad_pipeline.train.tiny import write_tiny_model
from cad_pipeline_tests.test_training import SMALL, _records

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Five records, one with a prompt long enough to need no padding, and a tiny model folder."""
    folder = tmp_path_factory.mktemp("generate")
    records = _records(folder, 5)
    records[1]["conversations"][0]["value"] = "<image>\nA much longer question, so that this prompt needs no padding at all here."
    model_dir = write_tiny_model([question_and_answer(r)[1] for r in records], folder / "model", SMALL, seed=1)
    return folder / "images", records, model_dir


def load(model_dir: Path, varied: bool = False):
    """The tiny model; `varied` gives it random weights of unit scale, so that its greedy answers differ from
    picture to picture and token to token (its own small initialization repeats one token, never its end token)."""
    base = load_base_model(TrainConfig(base_model=str(model_dir)), CPU, torch.float32, model_dir.parent, [])
    if varied:
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for parameter in base.model.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return base


def test_batched_greedy_answers_equal_one_at_a_time_answers(tiny):
    images, records, model_dir = tiny
    base = load(model_dir)
    batched = generate_answers(base.model, base.processor, records, images, 12, batch_size=5, device="cpu")
    alone = [generate_answers(base.model, base.processor, [r], images, 12, batch_size=1, device="cpu")[0] for r in records]
    assert len(batched) == 5 and all(isinstance(answer.text, str) for answer in batched)
    assert [(a.text, a.stop_reason, a.new_tokens) for a in batched] == [(a.text, a.stop_reason, a.new_tokens) for a in alone]
    assert all(a.stop_reason == TOKEN_LIMIT and a.new_tokens == 12 for a in batched)
    assert len({a.seconds for a in batched}) == 1, "every answer carries the seconds of its one batch"
    assert all(len(base.processor.tokenizer(answer.text, add_special_tokens=False)["input_ids"]) <= 12 for answer in batched)


def test_a_batch_over_its_time_budget_stops_every_row_promptly(tiny):
    """3,000 new tokens take about a minute here; a 0.3 s budget stops the batch after a few, every row at once."""
    images, records, model_dir = tiny
    base = load(model_dir)
    answers = generate_answers(base.model, base.processor, records[:3], images, 3000, batch_size=3, device="cpu", batch_budget=0.3)
    assert [answer.stop_reason for answer in answers] == [TIME] * 3
    assert len({answer.new_tokens for answer in answers}) == 1 and 1 <= answers[0].new_tokens < 3000
    assert 0.3 <= answers[0].seconds < 5.0


def emitted_tokens(base, records: list[dict], images: Path, max_new_tokens: int) -> list[list[int]]:
    """The tokens transformers itself generates for the records in one left-padded batch."""
    tokenizer = base.processor.tokenizer
    tokenizer.padding_side = "left"
    prompts = [prompt_text(base.processor, question_and_answer(record)[0]) for record in records]
    inputs = base.processor(text=prompts, images=open_images([images / r["image"] for r in records]), padding=True, return_tensors="pt")
    output = base.model.generate(
        **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
    )
    return output[:, inputs["input_ids"].shape[1] :].tolist()


def test_rows_stop_at_their_end_token_and_the_others_at_the_token_limit(tiny):
    """The end token is made a token some rows emit and others do not: those stop right after it (it counts as a new
    token, the text ends before it) while the batch goes on for the others up to max_new_tokens."""
    images, records, model_dir = tiny
    base = load(model_dir, varied=True)
    tokenizer = base.processor.tokenizer
    emitted = emitted_tokens(base, records, images, 16)
    assert all(len(row) == 16 and tokenizer.eos_token_id not in row for row in emitted)
    end = next(token for row in emitted for token in row if row.index(token) > 0 and any(token not in other for other in emitted))
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(end)
    expected = [
        (END_TOKEN, row.index(end) + 1, tokenizer.decode(row[: row.index(end)], skip_special_tokens=True))
        if end in row
        else (TOKEN_LIMIT, 16, tokenizer.decode(row, skip_special_tokens=True))
        for row in emitted
    ]
    answers = generate_answers(base.model, base.processor, records, images, 16, batch_size=5, device="cpu")
    assert [(a.stop_reason, a.new_tokens, a.text) for a in answers] == expected
    assert {reason for reason, *_ in expected} == {END_TOKEN, TOKEN_LIMIT} and any(1 < count < 16 for _, count, _ in expected)


def trained_adapter(model_dir: Path) -> TrainedModel:
    """The varied tiny model under a fresh LoRA adapter, as `load_trained` returns a trained one."""
    base = load(model_dir, varied=True)
    config = resolved_max_length(TrainConfig(base_model=str(model_dir), train_mode="lora"), base.model)
    return TrainedModel(add_lora(base.model, config), base.processor, config, CPU, torch.float32, model_dir)


def evaluation_samples(records: list[dict]) -> list[EvaluationSample]:
    return [EvaluationSample(record["id"], f"model/{record['id']}", record, Path("unused.json"), "") for record in records]


def answer_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


def test_an_overall_budget_cuts_the_samples_left_when_it_is_spent(tiny, tmp_path):
    """One batch always runs; a budget it overspends starts no other, for either variant."""
    images, records, model_dir = tiny
    config = EvaluationConfig(max_new_tokens=4, generation_batch_size=1, generation_budget=1e-6)
    stored = AnswersFile(tmp_path / "answers.jsonl", "fingerprint")
    log = []
    answers, losses, seconds, _ = generate(trained_adapter(model_dir), evaluation_samples(records[:3]), images, config, [ADAPTER, BASE], log.append, stored)
    assert [answer is None for answer in answers[ADAPTER]] == [False, True, True] and answers[BASE] == [None, None, None]
    assert answers[ADAPTER][0].stop_reason == TOKEN_LIMIT and answers[ADAPTER][0].new_tokens == 4
    assert [(line["variant"], line["sample_id"]) for line in answer_lines(stored.path)] == [(ADAPTER, records[0]["id"])]
    assert any(line.startswith("adapter: 1 generated") and "0 kept" in line and "2 cut: the overall generation budget" in line for line in log)
    assert any(line.startswith("base: 0 generated") and "3 cut" in line for line in log)
    assert set(losses) == {ADAPTER, BASE} and set(seconds) == {"generation_adapter", "generation_base"}


def test_a_killed_evaluation_resumes_with_only_its_missing_answers(tiny, tmp_path, monkeypatch):
    """Killed while writing the base's first batch: the adapter's answers and the base's first are kept, the torn
    line is dropped, and the rerun generates the base's other three, the same answers as before."""
    images, records, model_dir = tiny
    trained, samples = trained_adapter(model_dir), evaluation_samples(records[:4])
    config = EvaluationConfig(max_new_tokens=6, generation_batch_size=2, generation_budget=0)
    path = tmp_path / "answers.jsonl"
    first, *_ = generate(trained, samples, images, config, [ADAPTER, BASE], [].append, AnswersFile(path, "fingerprint"))
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + 8
    path.write_text("\n".join(lines[:6]) + "\n" + lines[6][:40])

    generated_for = []

    def counted(model, processor, records, *rest):
        generated_for.append([record["id"] for record in records])
        return generate_answers(model, processor, records, *rest)

    monkeypatch.setattr(evaluation, "generate_answers", counted)
    log = []
    resumed, *_ = generate(trained, samples, images, config, [ADAPTER, BASE], log.append, AnswersFile(path, "fingerprint"))
    assert generated_for == [[], [sample.id for sample in samples[1:]]]
    assert [(a.text, a.stop_reason, a.new_tokens) for v in (ADAPTER, BASE) for a in resumed[v]] == [
        (a.text, a.stop_reason, a.new_tokens) for v in (ADAPTER, BASE) for a in first[v]
    ]
    assert [a.seconds for a in resumed[ADAPTER]] == [a.seconds for a in first[ADAPTER]] and resumed[BASE][0].seconds == first[BASE][0].seconds
    assert any(line.startswith("base: 3 generated") and "1 kept" in line for line in log)
    kept = path.read_text().splitlines()
    assert kept[:6] == lines[:6] and len(kept) == 1 + 8
    assert [(line["variant"], line["sample_id"]) for line in answer_lines(path)] == [(v, s.id) for v in (ADAPTER, BASE) for s in samples]


def test_answers_of_another_adapter_or_other_generation_settings_start_the_file_anew(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    (adapter / "adapter_config.json").write_text("{}")
    config = EvaluationConfig()
    fingerprint = generation_fingerprint(adapter, config)
    which_samples = replace(config, sample_limit=3, baseline=False, generation_budget=5.0, score_timeout=1.0)
    assert generation_fingerprint(adapter, which_samples) == fingerprint, "settings that only choose samples keep the answers"
    for changed in (replace(config, max_new_tokens=7), replace(config, generation_batch_size=3), replace(config, generation_batch_budget=9.0)):
        assert generation_fingerprint(adapter, changed) != fingerprint

    path = tmp_path / "evaluation" / "answers.jsonl"
    AnswersFile(path, fingerprint).append(ADAPTER, [{"id": "a"}], [Answer(END_TOKEN, 3, 0.5, "```python\nx\n```")])
    assert AnswersFile(path, fingerprint).answers(ADAPTER) == {"a": Answer(END_TOKEN, 3, 0.5, "```python\nx\n```")}
    (adapter / "adapter_model.safetensors").write_bytes(b"weightz")
    retrained = generation_fingerprint(adapter, config)
    assert retrained != fingerprint
    restarted = AnswersFile(path, retrained)
    assert restarted.restarted and restarted.answers(ADAPTER) == {}
    assert path.read_text() == json.dumps({"fingerprint": retrained}) + "\n"
    assert not list(path.parent.glob(".*.tmp")), "replaced atomically, through a temporary file"
    assert not AnswersFile(path, fingerprint).answers(ADAPTER), "the answers of the old adapter are gone"


def test_budgets_must_not_be_negative():
    with pytest.raises(ValueError, match="generation_budget -1.0: must be at least 0"):
        EvaluationConfig(generation_budget=-1.0)
