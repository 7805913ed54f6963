"""Image use: shuffled images among models, the loss gap they open, answer variety, and the `uses_image` check that
fails for a model whose vision path is cut and passes for one that reads its picture."""

from pathlib import Path

import random

import pytest
import torch
from PIL import Image, ImageDraw, ImageOps

from cad_pipeline.dataset.conversations import conversation
from cad_pipeline.defs.training import uses_image_check
from cad_pipeline.train.config import TrainConfig
from cad_pipeline.train.data import Sample, first_views_first, padded_batch, prepare_samples, question_and_answer
from cad_pipeline.train.image_use import (
    CLEAR_GAP_NATS,
    distinct_answer_share,
    measure_image_use,
    model_of_image,
    shuffled_images,
    with_other_models_images,
)
from cad_pipeline.train.loop import answer_loss, contrast_pool, contrasted_backward, make_batch, train, validation_loss
from cad_pipeline.train.model import load_base_model, make_trainable
from cad_pipeline.train.tiny import write_tiny_model
from cad_pipeline_tests.test_training import CPU, SMALL

SHAPES = {"circle": "Circle0_0_0 = add_circle(center= [0., 0.], radius= 5.)", "square": "Line0_0_0 = add_line(start= [0., 0.], end= [5., 0.])"}


def _samples(models: list[str]) -> list[Sample]:
    return [Sample(f"{model}_{index}", Path(f"{model}_{index}.png"), (1,), (2,)) for index, model in enumerate(models)]


def test_every_sample_gets_an_image_of_another_model_and_every_image_is_used_once():
    models = ["a", "a", "a", "b", "c", "c", "d"]
    for seed in range(20):
        shuffled = shuffled_images(_samples(models), models, seed)
        owners = [image.name.split("_")[0] for image in (sample.image for sample in shuffled)]
        assert all(owner != model for owner, model in zip(owners, models, strict=True))
        assert sorted(sample.image.name for sample in shuffled) == sorted(f"{m}_{i}.png" for i, m in enumerate(models))
        assert [sample.answer_ids for sample in shuffled] == [(2,)] * len(models)


def test_shuffling_is_refused_when_one_model_has_more_than_half_the_samples():
    with pytest.raises(ValueError, match="one model has 3 of the 4 samples"):
        shuffled_images(_samples(["a", "a", "a", "b"]), ["a", "a", "a", "b"])
    assert measure_image_use(lambda samples: 1.0, _samples(["a", "a", "a", "b"]), ["a", "a", "a", "b"]) is None


def test_contrast_pictures_show_other_models_and_repeat_for_the_same_seed():
    models = ["a", "a", "a", "b", "c", "c", "d"]
    samples = _samples(models)
    shown = with_other_models_images(samples, samples, seed="s1")
    assert all(model_of_image(other.image) != model for other, model in zip(shown, models, strict=True))
    assert [sample.answer_ids for sample in shown] == [(2,)] * len(models)
    assert shown == with_other_models_images(samples, samples, seed="s1")
    assert sorted(sample.image.name for sample in shown) == sorted(sample.image.name for sample in samples), "the batch's own pictures"
    few = _samples(["a", "a", "b"])
    drawn = [with_other_models_images(few, samples, seed=str(seed)) for seed in range(30)]
    assert all(model_of_image(other.image) != model_of_image(own.image) for shown in drawn for other, own in zip(shown, few, strict=True))
    assert {other.image for shown in drawn for other in shown} == {sample.image for sample in samples}, "drawn from the pool"


def test_the_contrast_term_needs_pictures_of_two_models():
    with pytest.raises(ValueError, match="at least two models"):
        contrast_pool(_samples(["a", "a"]), TrainConfig())
    assert contrast_pool(_samples(["a", "b"]), TrainConfig(image_contrast=0)) is None
    assert contrast_pool(_samples(["a", "b"]), TrainConfig(base_model="folder")) is None


def test_distinct_answers_are_counted_over_distinct_models():
    assert distinct_answer_share(["x", "x ", "x", "x"], ["a", "b", "c", "d"]) == 0.25
    assert distinct_answer_share(["x", "y", "z", "w"], ["a", "b", "c", "d"]) == 1.0
    assert distinct_answer_share(["x", "y", "z"], ["a", "a", "b"]) == 1.0
    assert model_of_image(Path("images/0000_00000273_front.png")) == "0000_00000273"


def _records(folder: Path, count: int) -> list[dict]:
    """Drawings of a circle or a square, each answered with the matching call: only the picture tells which."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    records = []
    for index in range(count):
        kind = ("circle", "square")[index % 2]
        image = Image.new("RGB", (64, 64), "white")
        box = (12 + index % 5, 12, 50, 50 - index % 5)
        (ImageDraw.Draw(image).ellipse if kind == "circle" else ImageDraw.Draw(image).rectangle)(box, outline="black", width=3)
        name = f"model{index:03d}_front.png"
        image.save(images / name)
        records.append(conversation(f"model{index:03d}_front", name, "per_view", SHAPES[kind]))
    return records


@pytest.fixture(scope="module")
def trained_to_read(tmp_path_factory):
    """The tiny model trained from scratch until its answers follow its pictures. It learns the code first and the
    picture last (past step 90 of these full-batch steps at a constant rate): a loss that falls proves nothing."""
    folder = tmp_path_factory.mktemp("image_use")
    records = _records(folder, 16)
    config = TrainConfig(train_mode="full", batch_size=16)
    model_dir = write_tiny_model([question_and_answer(r)[1] for r in records], folder / "base", SMALL, seed=0)
    base = load_base_model(TrainConfig(base_model=str(model_dir)), CPU, torch.float32, folder, [])
    make_trainable(base.model, config)
    samples = prepare_samples(records, folder / "images", base.processor, 2048).samples
    batch = padded_batch(samples, base.processor)
    optimizer = torch.optim.AdamW(base.model.parameters(), lr=3e-3)
    base.model.train()
    for _ in range(130):
        loss, tokens = answer_loss(base.model, batch)
        (loss / tokens).backward()
        optimizer.step()
        optimizer.zero_grad()
    return base, samples, config


def _image_use(base, samples, config):
    def loss_of(shown):
        return validation_loss(base.model, shown, base.processor, config, CPU, torch.float32, False)

    return measure_image_use(loss_of, samples, [model_of_image(sample.image) for sample in samples])


def test_the_check_passes_for_a_model_that_reads_its_picture(trained_to_read):
    use = _image_use(*trained_to_read)
    assert use.gap_nats > 2 * CLEAR_GAP_NATS
    assert use.shuffled_image_loss > use.true_image_loss
    result = uses_image_check(use, 1.0)
    assert result.passed and result.metadata["image_loss_gap_nats"].value == pytest.approx(use.gap_nats)


def test_the_check_fails_for_the_same_model_with_its_vision_path_cut(trained_to_read):
    base, samples, config = trained_to_read
    projector = base.model.model.multi_modal_projector.linear_2
    kept = projector.weight.detach().clone(), projector.bias.detach().clone()
    with torch.no_grad():
        projector.weight.zero_()
        projector.bias.zero_()
    try:
        use = _image_use(base, samples, config)
    finally:
        with torch.no_grad():
            projector.weight.copy_(kept[0])
            projector.bias.copy_(kept[1])
    assert use.gap_nats == pytest.approx(0.0, abs=1e-6)
    result = uses_image_check(use, 1.0)
    assert not result.passed and "shuffled images" in result.description


@pytest.mark.parametrize("margin", [100.0, 0.0])
def test_the_contrast_term_back_propagates_the_hinge_it_names(tmp_path, margin):
    """Two passes one after the other give the gradient of loss + weight x max(0, margin x tokens - (wrong - loss)),
    whether the hinge is open (a margin no model reaches) or closed."""
    records = _records(tmp_path, 8)
    model_dir = write_tiny_model([question_and_answer(r)[1] for r in records], tmp_path / "base", SMALL, seed=0)
    base = load_base_model(TrainConfig(base_model=str(model_dir)), CPU, torch.float32, tmp_path, [])
    make_trainable(base.model, TrainConfig(train_mode="full"))
    samples = prepare_samples(records, tmp_path / "images", base.processor, 2048).samples
    batch = make_batch(samples[:4], base.processor, False, contrast_pool=samples)
    targets = batch.answer_tokens + 3  # as when the step accumulates other micro-batches

    def gradients() -> list[torch.Tensor]:
        found = [parameter.grad.clone() for parameter in base.model.parameters() if parameter.grad is not None]
        base.model.zero_grad(set_to_none=True)
        return found

    contrasted_backward(base.model, batch, torch.float32, 0.7, margin, targets)
    split = gradients()
    loss, tokens = answer_loss(base.model, batch)
    wrong, _ = answer_loss(base.model, batch.contrast)
    ((loss + 0.7 * torch.relu(margin * tokens - (wrong - loss))) / targets).backward()
    whole = gradients()
    (answer_loss(base.model, batch)[0] / targets).backward()
    plain = gradients()
    assert len(split) == len(whole) == len(plain)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(split, whole, strict=True))
    opened = float(wrong - loss) < margin * tokens
    assert opened or margin == 0.0
    assert any(not torch.allclose(a, b) for a, b in zip(split, plain, strict=True)) is opened


def test_the_check_fails_when_every_model_gets_the_same_answer():
    result = uses_image_check(None, 1 / 12)
    assert not result.passed and "8% of the distinct models" in result.description


def test_a_cut_of_the_validation_samples_covers_as_many_models_as_it_can():
    records = ["a_front", "a_top", "a_right", "b_front", "b_top", "c_front"]
    assert first_views_first(records, lambda name: name.split("_")[0]) == ["a_front", "b_front", "c_front", "a_top", "b_top", "a_right"]


def _inverted_or_not_records(folder: Path, count: int) -> list[dict]:
    """Random strokes at the size the pipeline renders, every other drawing inverted (white on black) and answered
    with the other call: a cue any vision path that keeps pictures apart passes on."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    strokes = random.Random(0)
    records = []
    for index in range(count):
        image = Image.new("RGB", (192, 192), "white")
        for _ in range(3):
            ImageDraw.Draw(image).line([(strokes.randrange(192), strokes.randrange(192)) for _ in range(2)], fill="black", width=2)
        kind = ("circle", "square")[index % 2]
        name = f"model{index:03d}_front.png"
        (ImageOps.invert(image) if kind == "square" else image).save(images / name)
        records.append(conversation(f"model{index:03d}_front", name, "per_view", SHAPES[kind]))
    return records


@pytest.mark.parametrize("vision_scale, reads_picture", [(0.0, True), (1.0, False)])
def test_the_tiny_model_learns_to_read_a_picture_only_with_its_vision_path_at_a_share_of_the_rate(tmp_path, vision_scale, reads_picture):
    """The tiny model in full at 1e-3, the vision path at the default 0.1 of it, reads the cue within 80 steps without
    the image-contrast term; at the decoder's rate the vision path collapses into a constant and the answer stays a guess."""
    records = _inverted_or_not_records(tmp_path, 160)
    config = TrainConfig(
        learning_rate=1e-3, batch_size=8, epochs=1000, max_steps=80, vision_learning_rate_scale=vision_scale, image_contrast=0, checkpoint_every=0
    )
    torch.manual_seed(0)
    base = load_base_model(config, CPU, torch.float32, tmp_path, [question_and_answer(record)[1] for record in records])
    make_trainable(base.model, config)
    val, training = (prepare_samples(part, tmp_path / "images", base.processor, 4096).samples for part in (records[:32], records[32:]))
    train(base.model, base.processor, training, val, config, CPU, torch.float32, tmp_path / "checkpoints")
    use = _image_use(base, val, config)
    assert uses_image_check(use, 1.0).passed is reads_picture
    assert (use.gap_nats > 2 * CLEAR_GAP_NATS) if reads_picture else (abs(use.gap_nats) < CLEAR_GAP_NATS / 10)
