"""Generation with the training prompt: batched with left padding, it gives each record the answer it gets alone."""

import torch

from cad_pipeline.evaluate.generate import generate_answers
from cad_pipeline.train.config import TrainConfig
from cad_pipeline.train.data import question_and_answer
from cad_pipeline.train.model import load_base_model
from cad_pipeline.train.tiny import write_tiny_model
from cad_pipeline_tests.test_training import SMALL, _records


def test_batched_greedy_answers_equal_one_at_a_time_answers(tmp_path):
    records = _records(tmp_path, 5)
    folder = write_tiny_model([question_and_answer(r)[1] for r in records], tmp_path / "model", SMALL, seed=1)
    base = load_base_model(TrainConfig(base_model=str(folder)), torch.device("cpu"), torch.float32, tmp_path, [])
    records[1]["conversations"][0]["value"] = "<image>\nA much longer question, so that this prompt needs no padding at all here."
    batched = generate_answers(base.model, base.processor, records, tmp_path / "images", 12, batch_size=5, device="cpu")
    alone = [generate_answers(base.model, base.processor, [r], tmp_path / "images", 12, batch_size=1, device="cpu")[0] for r in records]
    assert len(batched) == 5 and all(isinstance(answer, str) for answer in batched)
    assert batched == alone
    assert all(len(base.processor.tokenizer(answer, add_special_tokens=False)["input_ids"]) <= 12 for answer in batched)
