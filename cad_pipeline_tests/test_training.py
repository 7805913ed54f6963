"""LoRA fine-tuning on a real (tiny) transformers LLaVA: data path, loss, LoRA scope, exact resume."""

import pytest
import torch
from PIL import Image, ImageDraw

from cad_pipeline.cad.deepcad_json import read_file
from cad_pipeline.cad.errors import ModelError
from cad_pipeline.cad.openecad.writer import write_code
from cad_pipeline.dataset.conversations import conversation
from cad_pipeline.train.config import TrainConfig
from cad_pipeline.train.data import IGNORE, length_grouped_batches, packed_batch, padded_batch, prepare_samples, question_and_answer
from cad_pipeline.train.loop import answer_loss, train
from cad_pipeline.train.model import add_lora, load_base_model, lora_targets
from cad_pipeline.train.tiny import TinyShape, write_tiny_model
from cad_pipeline_tests.conftest import REAL_SAMPLES

SMALL = TinyShape(vocab_size=600, hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vision_hidden=32,
                  vision_intermediate=64, vision_layers=1, vision_heads=2, image_size=64, patch_size=16)  # fmt: skip
CPU = torch.device("cpu")


def _records(folder, count):
    """Conversations over the real samples' code, each with its own small drawing."""
    codes = []
    for path in sorted(REAL_SAMPLES.glob("*.json")):
        try:
            codes.append(write_code(read_file(path)))
        except ModelError:
            continue
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    records = []
    for index in range(count):
        name = f"model{index:03d}_front.png"
        image = Image.new("RGB", (96, 96), "white")
        ImageDraw.Draw(image).rectangle((10 + index % 30, 12, 60, 50 + index % 40), outline="black", width=2)
        image.save(images / name)
        records.append(conversation(f"model{index:03d}_front", name, "per_view", codes[index % len(codes)]))
    return records


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("training")
    records = _records(folder, 24)
    model_dir = write_tiny_model([question_and_answer(r)[1] for r in records], folder / "base", SMALL, seed=0)
    return folder, records, model_dir


def _loaded(model_dir, **settings):
    config = TrainConfig(base_model=str(model_dir), **settings)
    return config, load_base_model(config, CPU, torch.float32, model_dir.parent, [])


def test_the_default_tiny_model_is_about_ten_million_parameters_and_reloads_exactly(tmp_path):
    texts = ["SketchPlane0 = add_sketchplane(origin= [0., 0., 0.], normal= [0., 0., 1.], x_axis= [1., 0., 0.])"] * 20
    folder = write_tiny_model(texts, tmp_path / "tiny")
    base = load_base_model(TrainConfig(base_model=str(folder)), CPU, torch.float32, tmp_path, [])
    assert 8e6 < sum(p.numel() for p in base.model.parameters()) < 14e6
    again = load_base_model(TrainConfig(base_model=str(folder)), CPU, torch.float32, tmp_path, [])
    ids = torch.tensor([base.processor.tokenizer("add_extrude(sketch= Sketch0")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(base.model(input_ids=ids).logits, again.model(input_ids=ids).logits)


def test_labels_cover_exactly_the_answer_and_the_end_token(tiny_setup):
    folder, records, model_dir = tiny_setup
    _, base = _loaded(model_dir)
    samples = prepare_samples(records[:3], folder / "images", base.processor, 4096).samples
    batch = padded_batch(samples, base.processor)
    tokenizer = base.processor.tokenizer
    for row, sample in enumerate(samples):
        labelled = batch.labels[row][batch.labels[row] != IGNORE].tolist()
        assert labelled == list(sample.answer_ids)
        assert tokenizer.decode(labelled[:-1]) == question_and_answer(records[row])[1]
        assert labelled[-1] == tokenizer.eos_token_id
        image_positions = (batch.inputs["input_ids"][row] == base.model.config.image_token_id).sum()
        assert image_positions == (SMALL.image_size // SMALL.patch_size) ** 2
    assert batch.answer_tokens == sum(len(s.answer_ids) for s in samples)
    assert batch.real_tokens == sum(s.length for s in samples)


def test_answer_only_loss_equals_the_models_own_loss(tiny_setup):
    folder, records, model_dir = tiny_setup
    _, base = _loaded(model_dir)
    samples = prepare_samples(records[:4], folder / "images", base.processor, 4096).samples
    batch = padded_batch(samples, base.processor)
    with torch.no_grad():
        ours, count = answer_loss(base.model, batch)
        theirs = base.model(**batch.inputs, labels=batch.labels, use_cache=False).loss
    assert count == batch.answer_tokens
    assert float(ours) / count == pytest.approx(float(theirs), rel=1e-5)


def test_packed_loss_is_the_token_weighted_mean_of_the_samples_losses(tiny_setup):
    folder, records, model_dir = tiny_setup
    _, base = _loaded(model_dir)
    samples = prepare_samples(records[:3], folder / "images", base.processor, 4096).samples
    with torch.no_grad():
        packed, packed_count = answer_loss(base.model, packed_batch(samples, base.processor))
        alone = [answer_loss(base.model, padded_batch([s], base.processor)) for s in samples]
    assert packed_count == sum(count for _, count in alone)
    assert float(packed) == pytest.approx(sum(float(loss) for loss, _ in alone), rel=1e-4)


def test_length_grouping_removes_most_padding():
    lengths = [200 + (index * 7919) % 1300 for index in range(512)]

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches) / sum(lengths)

    grouped = length_grouped_batches(lengths, 4, seed=0, epoch=0)
    assert sorted(i for b in grouped for i in b) == list(range(512))
    assert grouped != length_grouped_batches(lengths, 4, seed=0, epoch=1)
    assert grouped == length_grouped_batches(lengths, 4, seed=0, epoch=0)
    assert max(max(lengths[i] for i in b) for b in grouped[:1]) == max(lengths)
    unsorted = [list(range(i, i + 4)) for i in range(0, 512, 4)]
    assert padding(grouped) < 0.05 and padding(unsorted) > 0.25


def test_lora_is_scoped_to_the_language_model_and_the_connector_trains(tiny_setup):
    _, _, model_dir = tiny_setup
    config, base = _loaded(model_dir)
    targets = lora_targets(base.model, vision=False)
    assert targets and all("language_model" in name for name in targets)
    with_vision = lora_targets(base.model, vision=True)
    assert any("vision_tower" in name for name in with_vision) and set(targets) < set(with_vision)
    model = add_lora(base.model, config)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert any("multi_modal_projector" in name for name in trainable)
    assert not any("vision_tower" in name for name in trainable)
    assert all("lora_" in name or "multi_modal_projector" in name for name in trainable)


def test_a_killed_run_resumes_to_the_same_adapter_and_loss_curve(tiny_setup, tmp_path):
    folder, records, model_dir = tiny_setup
    settings = dict(max_steps=5, batch_size=2, gradient_accumulation=2, checkpoint_every=2, learning_rate=3e-3, seed=3)

    def run(checkpoints, stop_after=None):
        config, base = _loaded(model_dir, **settings)
        model = add_lora(base.model, config)
        samples = prepare_samples(records, folder / "images", base.processor, 4096).samples
        state = train(model, base.processor, samples[:20], samples[20:], config, CPU, torch.float32, checkpoints, stop_after=stop_after)
        return model, state

    whole_model, whole = run(tmp_path / "whole")
    run(tmp_path / "killed", stop_after=3)  # dies after step 3; the last checkpoint is step 2
    resumed_model, resumed = run(tmp_path / "killed")
    assert [r.loss for r in resumed.steps] == [r.loss for r in whole.steps]
    assert len(whole.steps) == 5 and whole.steps[-1].loss < whole.steps[0].loss
    assert [loss for _, loss in resumed.val_losses] == [loss for _, loss in whole.val_losses]
    _, again = run(tmp_path / "whole")  # a finished run's checkpoint is not resumed: it trains again, identically
    assert [r.loss for r in again.steps] == [r.loss for r in whole.steps]
    expected = {n: p for n, p in whole_model.named_parameters() if p.requires_grad}
    for name, parameter in resumed_model.named_parameters():
        if parameter.requires_grad:
            assert torch.equal(parameter, expected[name]), name


def test_a_plan_predicts_each_step_from_its_padded_tokens():
    from cad_pipeline.train.plan import StepMeasurement, _fit_line

    assert _fit_line([1000, 2000, 4000], [1.5, 2.5, 4.5]) == pytest.approx((0.5, 0.001))
    assert _fit_line([1000, 2000], [2.0, 2.5]) == pytest.approx((1.5, 0.0005))
    fixed, per_token = _fit_line([1000, 2000], [1.0, 3.0])  # a negative fixed part is not physical: through the origin
    assert fixed == 0.0 and per_token == pytest.approx(4.0 / 3000)
    measurement = StepMeasurement("cpu", "float32", 2, 1, 2.0, 2.0, 0.001, 0.0, 5.0, 1.0, 0.0, 1, 0, 10, 0.5, step_seconds=[1.0, 2.0, 3.0])
    assert measurement.run_seconds(2) == 5.0 + 3.0 and measurement.run_seconds(7) == 5.0 + 2 * 6.0 + 1.0
    assert "step_seconds" not in measurement.to_json()
