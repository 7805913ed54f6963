"""Fine-tuning on a real (tiny) transformers LLaVA, LoRA and full: data path, loss, what trains, exact resume and reload,
validation during training, the best weights kept, the time budget."""

import itertools
import json
import os
from dataclasses import replace
from pathlib import Path
import threading
import time

import pytest
import torch
from PIL import Image, ImageDraw

from cad_pipeline.cad.deepcad_json import read_file
from cad_pipeline.cad.errors import ModelError
from cad_pipeline.cad.openecad.writer import write_code
from cad_pipeline.dataset.conversations import conversation
from cad_pipeline.options import SettingError
from cad_pipeline.train.config import TrainConfig, resolved_train_mode
from cad_pipeline.train.data import IGNORE, length_grouped_batches, packed_batch, padded_batch, prepare_samples, question_and_answer
from cad_pipeline.train.loop import CHECKPOINT_FILE, answer_loss, make_optimizer, prefetched_batches, train, validation_loss
from cad_pipeline.train.model import (
    add_lora,
    compile_layers,
    load_base_model,
    load_trained,
    lora_targets,
    make_trainable,
    resolved_max_length,
    save_trained,
    trainable_parameters_by_part,
    trained_parts,
)
from cad_pipeline.train.tiny import TinyShape, write_tiny_model
from cad_pipeline_tests.conftest import REAL_SAMPLES

SMALL = TinyShape(vocab_size=600, hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vision_hidden=32,
                  vision_intermediate=64, vision_layers=1, vision_heads=2, image_size=64, patch_size=16)  # fmt: skip
CPU = torch.device("cpu")
SHORT = 450
"""Tokens: a max_length that keeps only the records with short answers, for tests that take many steps."""


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


def test_the_default_tiny_model_sees_drawings_through_convolutions_and_reloads_exactly(tmp_path):
    texts = ["SketchPlane0 = add_sketchplane(origin= [0., 0., 0.], normal= [0., 0., 1.], x_axis= [1., 0., 0.])"] * 20
    folder = write_tiny_model(texts, tmp_path / "tiny")
    base = load_base_model(TrainConfig(base_model=str(folder)), CPU, torch.float32, tmp_path, [])
    assert type(base.model.model.vision_tower).__name__ == "DrawingEncoder"
    assert 5e6 < sum(p.numel() for p in base.model.parameters()) < 8e6
    blank, drawn = Image.new("RGB", (512, 512), "white"), Image.new("RGB", (512, 512), "white")
    ImageDraw.Draw(drawn).rectangle((100, 150, 400, 380), outline="black", width=2)
    pixels = base.processor.image_processor([blank, drawn], return_tensors="pt")["pixel_values"]
    assert pixels.shape == (2, 3, 192, 192) and pixels[0].abs().max() == 0 and pixels[1].min() < -1
    again = load_base_model(TrainConfig(base_model=str(folder)), CPU, torch.float32, tmp_path, [])
    with torch.no_grad():
        features = base.model.model.get_image_features(pixel_values=pixels).pooler_output
        assert len(features) == 2 and features[0].shape == (36, 256)
        assert (features[0] - features[1]).abs().mean() > 0.1 * features[0].abs().mean()
        assert all(torch.equal(a, b) for a, b in zip(features, again.model.model.get_image_features(pixel_values=pixels).pooler_output))


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


def test_batches_are_made_ahead_on_a_worker_in_order_and_each_step_records_its_wait(tiny_setup, tmp_path):
    folder, records, model_dir = tiny_setup
    config, base = _loaded(model_dir, batch_size=2, max_steps=3, checkpoint_every=0)
    samples = prepare_samples(records[:8], folder / "images", base.processor, 4096).samples
    micro_batches = [samples[start : start + 2] for start in range(0, 8, 2)]
    made = list(prefetched_batches(micro_batches, base.processor, False))
    assert len(made) == 4
    for (batch, waited), chosen in zip(made, micro_batches):
        expected = padded_batch(chosen, base.processor)
        assert torch.equal(batch.inputs["input_ids"], expected.inputs["input_ids"]) and waited >= 0
        assert torch.equal(batch.inputs["pixel_values"], expected.inputs["pixel_values"])
        assert torch.equal(batch.answer_targets, expected.labels[expected.labels != IGNORE])
    stream = prefetched_batches(iter(micro_batches), base.processor, False)
    next(stream)
    stream.close()
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("batches")]
    state = train(make_trainable(base.model, config), base.processor, samples, [], config, CPU, torch.float32, tmp_path)
    assert len(state.steps) == 3 and all(0 <= record.data_wait_seconds < record.seconds for record in state.steps)


def test_the_fused_optimizer_makes_the_update_of_the_unfused_one(tiny_setup):
    folder, records, model_dir = tiny_setup
    config, base = _loaded(model_dir, train_mode="full", weight_decay=0.1)
    model = make_trainable(base.model, config)
    optimizer = make_optimizer(model, config)
    assert optimizer.defaults["fused"]
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    copies = [parameter.detach().clone().requires_grad_() for parameter in parameters]
    before = [parameter.detach().clone() for parameter in parameters]
    reference = torch.optim.AdamW(copies, lr=config.learning_rate, weight_decay=0.1, foreach=False)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        for parameter, copy in zip(parameters, copies):
            parameter.grad = torch.randn(parameter.shape, generator=generator)
            copy.grad = parameter.grad.clone()
        optimizer.step()
        reference.step()
    assert all(torch.allclose(parameter, copy, rtol=1e-5, atol=1e-7) for parameter, copy in zip(parameters, copies))
    assert all(not torch.equal(parameter, original) for parameter, original in zip(parameters, before))


@pytest.mark.parametrize("train_mode", ["lora", "full"])
def test_bf16_training_keeps_fp32_masters_so_an_update_below_bf16_resolution_survives(tiny_setup, tmp_path, train_mode):
    folder, records, model_dir = tiny_setup
    config = TrainConfig(
        base_model=str(model_dir), train_mode=train_mode, freeze_vision_tower=True, batch_size=2, max_steps=1,
        learning_rate=1e-4, warmup_ratio=0.0, checkpoint_every=0, max_grad_norm=0.0,
    )  # fmt: skip
    base = load_base_model(config, CPU, torch.bfloat16, tmp_path, [])
    model = make_trainable(base.model, config)
    trained = {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}
    frozen = {name: parameter for name, parameter in model.named_parameters() if not parameter.requires_grad}
    assert {p.dtype for p in trained.values()} == {torch.float32} and {p.dtype for p in frozen.values()} == {torch.bfloat16}
    norms = [name for name in trained if name.endswith("norm.weight")] if train_mode == "full" else []
    assert len(norms) >= 5 or train_mode == "lora"
    before = {name: parameter.detach().clone() for name, parameter in trained.items()}
    samples = prepare_samples(records[:2], folder / "images", base.processor, 4096).samples
    state = train(model, base.processor, samples, [], config, CPU, torch.bfloat16, tmp_path / "checkpoints")
    assert len(state.steps) == 1 and torch.isfinite(torch.tensor(state.steps[0].loss))
    one = torch.tensor(1.0, dtype=torch.bfloat16)
    assert one - 1e-4 == one  # pure bf16 would lose this update on a weight of 1
    for name in norms:  # full mode trains the norms, whose weights start at 1: Adam's first step moves each by the rate
        assert torch.all(before[name] == 1.0)
        assert float((trained[name].detach() - before[name]).abs().max()) == pytest.approx(1e-4, rel=0.05), name
    # LoRA's B starts at 0, so A gets no gradient at the first step; every other trained weight moves
    moving = [name for name in trained if "lora_A" not in name]
    assert sum(int((trained[name] != before[name]).sum()) for name in moving) > 0.9 * sum(trained[name].numel() for name in moving)


def test_max_length_0_is_the_models_context_and_a_set_one_is_kept(tiny_setup):
    _, _, model_dir = tiny_setup
    config, base = _loaded(model_dir)
    assert config.max_length == 0 and resolved_max_length(config, base.model).max_length == SMALL.max_positions == 4096
    assert resolved_max_length(replace(config, max_length=300), base.model).max_length == 300


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


@pytest.mark.parametrize("train_mode", ["lora", "full"])
def test_a_killed_run_resumes_to_the_same_weights_and_loss_curve(tiny_setup, tmp_path, train_mode):
    folder, records, model_dir = tiny_setup
    settings = dict(
        epochs=2, max_steps=5, batch_size=2, gradient_accumulation=2, checkpoint_every=2, learning_rate=3e-3, seed=3, train_mode=train_mode,
        validation_every=2, keep_best=True,
    )  # fmt: skip

    def run(checkpoints, stop_after=None):
        config, base = _loaded(model_dir, **settings)
        model = make_trainable(base.model, config)
        samples = prepare_samples(records, folder / "images", base.processor, SHORT).samples  # 10 to train: 3 steps an epoch
        state = train(model, base.processor, samples[:10], samples[10:], config, CPU, torch.float32, checkpoints, stop_after=stop_after)
        return model, state

    whole_model, whole = run(tmp_path / "whole")
    run(tmp_path / "killed", stop_after=3)  # dies after step 3; the last checkpoint is step 2
    resumed_model, resumed = run(tmp_path / "killed")
    assert [r.loss for r in resumed.steps] == [r.loss for r in whole.steps]
    assert len(whole.steps) == 5 and whole.steps[-1].loss < whole.steps[0].loss
    assert resumed.validations == whole.validations and [r.step for r in whole.validations] == [0, 2, 3, 4, 5]
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
    measurement = StepMeasurement("cpu", "float32", 2, 1, 2.0, 2.0, 0.001, 0.0, 5.0, 1.0, 0.0, 0.0, 1, 0, 10, 0.5, step_seconds=[1.0, 2.0, 3.0])
    assert measurement.run_seconds(2) == 5.0 + 3.0 and measurement.run_seconds(7) == 5.0 + 2 * 6.0 + 1.0
    assert "step_seconds" not in measurement.to_json()


def _short_samples(folder, records, processor):
    """The short samples, those with the shortest answer first, so a split by answer keeps validation unseen."""
    samples = prepare_samples(records, folder / "images", processor, SHORT).samples
    shortest = min(samples, key=lambda sample: len(sample.answer_ids)).answer_ids
    return [s for s in samples if s.answer_ids == shortest], [s for s in samples if s.answer_ids != shortest]


def test_auto_trains_the_tiny_model_in_full_and_any_named_model_with_lora():
    assert resolved_train_mode(TrainConfig()) == "full"
    assert resolved_train_mode(TrainConfig(base_model="/models/openecad")) == "lora"
    assert resolved_train_mode(TrainConfig(train_mode="lora")) == "lora"
    assert resolved_train_mode(TrainConfig(base_model="/models/openecad", train_mode="full")) == "full"
    with pytest.raises(SettingError, match="train_mode 'partial': must be one of auto, lora, full"):
        TrainConfig(train_mode="partial")


def test_each_mode_trains_the_parts_it_names(tiny_setup):
    from cad_pipeline.train.plan import model_shape

    folder, records, model_dir = tiny_setup
    expected = {
        ("full", False): {"language_model": "full", "connector": "full", "vision_tower": "full"},
        ("full", True): {"language_model": "full", "connector": "full", "vision_tower": "frozen"},
        ("lora", False): {"language_model": "lora r=16", "connector": "full", "vision_tower": "frozen"},
    }
    kept_per_image = {}
    for (mode, freeze), parts in expected.items():
        config, base = _loaded(model_dir, train_mode=mode, freeze_vision_tower=freeze)
        totals = trainable_parameters_by_part(base.model)  # a loaded model trains everything
        modules = dict(base.model.named_modules())
        lora_size = sum(config.lora_rank * (modules[name].in_features + modules[name].out_features) for name in lora_targets(base.model, False))
        model = make_trainable(base.model, config)
        counts = trainable_parameters_by_part(model)
        assert trained_parts(model, config) == parts
        shape = model_shape(model, base.processor, folder / "images" / records[0]["image"], torch.float32, packed=False)
        assert shape.trainable_parameters == sum(counts.values()) and shape.vision_trained == (parts["vision_tower"] != "frozen")
        kept_per_image[mode, freeze] = shape.vision_bytes_per_image
        if mode == "full":
            assert counts == {**totals, "vision_tower": 0 if freeze else totals["vision_tower"]}
        else:
            assert counts == {"language_model": lora_size, "connector": totals["connector"], "vision_tower": 0}
    assert kept_per_image["full", False] > 10 * kept_per_image["full", True] > 0, "a trained tower keeps its activations, a frozen one none"
    config, base = _loaded(model_dir, train_mode="lora", lora_vision=True)
    assert trained_parts(make_trainable(base.model, config), config)["vision_tower"] == "lora r=16"


@pytest.mark.parametrize("train_mode", ["lora", "full"])
def test_a_saved_model_reloads_to_the_same_logits_and_its_base_variant_is_the_base_model(tiny_setup, tmp_path, train_mode):
    folder, records, model_dir = tiny_setup
    config, base = _loaded(model_dir, train_mode=train_mode, max_steps=2, batch_size=2, learning_rate=3e-3, checkpoint_every=0)
    model = make_trainable(base.model, config)
    train_samples, val_samples = _short_samples(folder, records, base.processor)
    train(model, base.processor, train_samples, val_samples, config, CPU, torch.float32, tmp_path / "checkpoints")
    save_trained(model, base.processor, config, tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "train_config.json").read_text())["train_mode"] == train_mode

    reloaded = load_trained(tmp_path / "adapter")
    batch = padded_batch(val_samples[:2], base.processor)
    _, untouched = _loaded(model_dir)
    with torch.no_grad():
        trained_logits = model.eval()(**batch.inputs).logits
        base_logits = untouched.model(**batch.inputs).logits
        assert (reloaded.model(**batch.inputs).logits - trained_logits).abs().max() == 0
        with reloaded.as_base() as base_variant:
            assert (base_variant(**batch.inputs).logits - base_logits).abs().max() == 0
        assert (reloaded.model(**batch.inputs).logits - trained_logits).abs().max() == 0, "the trained weights are back"
    assert not torch.equal(trained_logits, base_logits)
    assert reloaded.config.train_mode == train_mode


def test_validation_every_measures_between_epochs_at_fractional_epochs_and_the_curve_shows_them(tiny_setup, tmp_path):
    from cad_pipeline.train.tracking import loss_curve_png

    folder, records, model_dir = tiny_setup
    config, base = _loaded(model_dir, train_mode="full", epochs=3, batch_size=2, validation_every=2, checkpoint_every=0)
    model = make_trainable(base.model, config)
    samples = prepare_samples(records, folder / "images", base.processor, SHORT).samples
    state = train(model, base.processor, samples[:6], samples[6:8], config, CPU, torch.float32, tmp_path / "checkpoints")
    assert [record.step for record in state.validations] == [0, 2, 3, 4, 6, 8, 9]  # 3 steps an epoch; step 6 ends one
    assert [record.epoch for record in state.validations] == pytest.approx([0, 2 / 3, 1, 4 / 3, 2, 8 / 3, 3])
    assert state.best == min(state.validations, key=lambda record: record.loss)
    curve = loss_curve_png(state, tmp_path / "loss_curve.png")
    with Image.open(curve) as image:
        assert image.format == "PNG" and image.size == (700, 400)


def test_keep_best_saves_the_weights_of_the_lowest_validation_loss_not_the_last(tiny_setup, tmp_path):
    """A high learning rate without clipping on two samples overfits within a few epochs: the validation loss falls,
    then rises."""
    folder, records, model_dir = tiny_setup
    for keep_best in (True, False):
        config, base = _loaded(
            model_dir, train_mode="full", keep_best=keep_best, epochs=20, batch_size=2, learning_rate=3e-2, warmup_ratio=0.0, max_grad_norm=0.0,
            checkpoint_every=0,
        )  # fmt: skip
        model = make_trainable(base.model, config)
        train_samples, val_samples = _short_samples(folder, records, base.processor)
        checkpoints = tmp_path / f"checkpoints_{keep_best}"
        state = train(model, base.processor, train_samples[:2], val_samples[:2], config, CPU, torch.float32, checkpoints)
        best, last = state.best, state.validations[-1]
        assert best.step < last.step and last.loss > best.loss + 0.05, "the validation loss rose after its minimum"
        assert len(state.validations) == 21 and best.epoch == best.step  # one step an epoch
        save_trained(model, base.processor, config, tmp_path / f"adapter_{keep_best}")
        reloaded = load_trained(tmp_path / f"adapter_{keep_best}")
        saved_loss = validation_loss(reloaded.model, val_samples[:2], reloaded.processor, config, CPU, torch.float32, packed=False)
        assert sorted(path.name for path in checkpoints.iterdir()) == ([f"best-{best.step}.pt"] if keep_best else []) + [CHECKPOINT_FILE]
        assert saved_loss == pytest.approx(best.loss if keep_best else last.loss, rel=1e-6)


def test_a_time_budget_stops_training_and_runs_the_schedule_down_to_its_end(tiny_setup, tmp_path):
    """Timed by a clock that moves a tenth of a second each time it is read, so the machine's speed decides nothing."""
    folder, records, model_dir = tiny_setup
    budget_seconds, tick = 3.0, 0.1
    config, base = _loaded(
        model_dir, train_mode="full", max_minutes=budget_seconds / 60, epochs=1000, batch_size=2, warmup_ratio=0.1, checkpoint_every=0
    )
    model = make_trainable(base.model, config)
    train_samples, val_samples = _short_samples(folder, records, base.processor)
    readings = itertools.count(1)
    state = train(
        model, base.processor, train_samples[:2], val_samples[:1], config, CPU, torch.float32, tmp_path / "checkpoints",
        clock=lambda: tick * next(readings),
    )  # fmt: skip
    assert 5 < state.step < 1000 and state.finished
    assert budget_seconds <= state.elapsed_seconds <= budget_seconds + 2 * tick, "stops at the first reading past the budget"
    rates = [record.learning_rate for record in state.steps]
    peak = rates.index(max(rates))
    assert max(rates) > 0.8 * config.learning_rate and rates[-1] < 0.1 * config.learning_rate
    assert rates[peak:] == sorted(rates[peak:], reverse=True) and rates[:peak] == sorted(rates[:peak])


def test_compiled_layers_train_to_the_losses_of_eager_ones(tiny_setup, tmp_path):
    """Regional compilation changes how the layers run, not what they compute; batches of different lengths share the
    captured (dynamic-shape) graphs. Captured and run through AOTAutograd without code generation, which torch tests
    itself and which would take minutes here."""
    folder, records, model_dir = tiny_setup
    losses = {}
    for compiled in (False, True):
        config, base = _loaded(model_dir, train_mode="full", batch_size=2, max_steps=3, checkpoint_every=0)
        model = make_trainable(base.model, config)
        if compiled:
            assert compile_layers(model, backend="aot_eager") == SMALL.layers + SMALL.vision_layers
        train_samples, val_samples = _short_samples(folder, records, base.processor)
        state = train(model, base.processor, train_samples[:6], val_samples[:1], config, CPU, torch.float32, tmp_path / str(compiled))
        losses[compiled] = [record.loss for record in state.steps] + [record.loss for record in state.validations]
    assert len(losses[True]) >= 4 and losses[True] == pytest.approx(losses[False], rel=1e-5)


def test_a_resumed_run_continues_its_time_budget(tiny_setup, tmp_path):
    """The rate falls with the time spent; a resumed run that started its clock again would rise back to the peak."""
    folder, records, model_dir = tiny_setup
    config, base = _loaded(model_dir, train_mode="full", max_minutes=0.5, epochs=1000, batch_size=2, warmup_ratio=0.0, checkpoint_every=1)
    train_samples, val_samples = _short_samples(folder, records, base.processor)

    def run(stop_after):
        _, fresh = _loaded(model_dir)
        model = make_trainable(fresh.model, config)
        return train(model, fresh.processor, train_samples[:2], val_samples[:1], config, CPU, torch.float32, tmp_path / "checkpoints", stop_after=stop_after)

    killed = run(stop_after=3)
    saved = torch.load(tmp_path / "checkpoints" / CHECKPOINT_FILE, weights_only=False)["state"]["elapsed_seconds"]
    resumed = run(stop_after=4)
    assert resumed.steps[:3] == killed.steps and saved > 0
    assert resumed.elapsed_seconds > saved and resumed.steps[3].learning_rate < killed.steps[2].learning_rate


def test_saving_publishes_a_whole_new_version_and_a_failed_save_keeps_the_last_one(tiny_setup, tmp_path):
    from cad_pipeline.train.model import TRAIN_CONFIG_FILE

    folder, records, model_dir = tiny_setup
    config, base = _loaded(model_dir, train_mode="full")
    model = make_trainable(base.model, config)
    target = tmp_path / "lora_adapter" / "adapter"
    versions = tmp_path / "lora_adapter" / ".adapter.versions"
    save_trained(model, base.processor, config, target)
    first = os.readlink(target)

    class FullDisk:
        def save_pretrained(self, path):
            (Path(path) / "half_written").write_text("x")
            raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        save_trained(model, FullDisk(), config, target)
    assert os.readlink(target) == first and (target / TRAIN_CONFIG_FILE).is_file() and not (target / "half_written").exists()
    assert [path.name for path in versions.iterdir()] == [Path(first).name]
    save_trained(model, base.processor, config, target)
    assert os.readlink(target) != first and [path.name for path in versions.iterdir()] == [Path(os.readlink(target)).name]
    assert load_trained(target).config.train_mode == "full"


def test_auto_batch_size_takes_the_largest_micro_batch_that_fits_keeps_the_effective_batch_and_leaves_the_weights(tiny_setup, tmp_path, monkeypatch):
    from cad_pipeline.train.data import SampleSet
    from cad_pipeline.train.memory import GIB
    from cad_pipeline.train import plan
    from cad_pipeline.train.memory import TrainShape
    from cad_pipeline.train.plan import MemoryCalibration, choose_batch, largest_fitting_batch, model_shape, planned_peak
    from cad_pipeline.train.run import AUTO_BATCH_FILE, batch_choice
    from cad_pipeline.train.session import TrainingSession

    folder, records, model_dir = tiny_setup
    config, base = _loaded(model_dir, train_mode="full", batch_size=4, gradient_accumulation=2, auto_batch_size=True)
    samples = prepare_samples(records[:12], folder / "images", base.processor, 4096).samples
    session = TrainingSession(config, CPU, torch.float32, base, make_trainable(base.model, config), SampleSet(samples, []), SampleSet([], []), False)
    before = {name: parameter.detach().clone() for name, parameter in session.model.named_parameters()}
    torch.manual_seed(5)
    untouched = torch.rand(3)
    torch.manual_seed(5)
    roomy = choose_batch(session, 1000 * GIB)
    assert (roomy.batch_size, roomy.gradient_accumulation) == (8, 1) and roomy.planned_peak_bytes <= 1000 * GIB and 0 < roomy.measured_peak_bytes <= 1000 * GIB
    assert all(torch.equal(parameter, before[name]) and parameter.grad is None for name, parameter in session.model.named_parameters())
    assert torch.equal(torch.rand(3), untouched), "the calibration steps leave the random state as they found it"
    with pytest.raises(ValueError, match=r"auto_batch_size: even one sample per micro-batch is planned at .* over the budget"):
        choose_batch(session, 1.0)

    measured = plan._measured
    tried = []

    def out_of_memory_above_two(session, micro, accumulation, warmup, steps):
        tried.append(micro)
        if micro > 2:
            raise torch.OutOfMemoryError("test")
        return measured(session, micro, accumulation, warmup, steps)

    monkeypatch.setattr(plan, "_measured", out_of_memory_above_two)
    stepped = choose_batch(session, 1000 * GIB)
    assert tried == [8, 4, 2] and (stepped.batch_size, stepped.gradient_accumulation) == (2, 4), "a micro-batch the device cannot run is stepped down from"
    assert all(torch.equal(parameter, before[name]) for name, parameter in session.model.named_parameters())

    shape = model_shape(session.model, base.processor, samples[0].image, torch.float32, packed=False)
    calibration = MemoryCalibration(shape, TrainShape(1, 1, max(sample.length for sample in samples), False, 0.5), 1.0, 0.0, 0.0)
    planned = {micro: planned_peak(calibration, micro, 8) for micro in (1, 2, 4, 8)}
    assert planned[1] < planned[2] < planned[4] < planned[8]
    proposed = largest_fitting_batch(calibration, 8, planned[4] + 1)
    assert (proposed.batch_size, proposed.gradient_accumulation, proposed.planned_peak_bytes) == (4, 2, planned[4])
    assert largest_fitting_batch(calibration, 6, planned[4] + 1).batch_size == 3, "a divisor of the effective batch"
    with pytest.raises(ValueError, match="auto_batch_size: even one sample per micro-batch is planned at .* over the budget"):
        largest_fitting_batch(calibration, 8, planned[1] - 1)

    checkpoints = tmp_path / "checkpoints"
    chosen = batch_choice(replace(session, config=replace(config, memory_budget_gib=1000.0)), checkpoints)
    assert (checkpoints / AUTO_BATCH_FILE).is_file() and chosen.batch_size == 2
    resumed = batch_choice(replace(session, config=replace(config, memory_budget_gib=1e-9)), checkpoints)
    assert resumed == chosen, "a resumed run keeps the micro-batch it started with, whatever the budget now"
