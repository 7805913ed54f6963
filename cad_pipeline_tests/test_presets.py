"""Presets: the real models' shapes with random weights, labelled wherever they are used, refused for training unless asked."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from cad_pipeline.train.config import TrainConfig
from cad_pipeline.train.model import load_base_model
from cad_pipeline.train.presets import PRESETS, build_preset, described, preset_name
from cad_pipeline.train.run import run_training

CODE = [
    "SketchPlane0 = add_sketchplane(\n\torigin= [0., 0., 0.], normal= [0., 0., 1.], x_axis= [1., 0., 0.])",
    "Line0_0_0 = add_line(start= [-14.2875,   7.9375], end= [-10.0211,   7.9375])",
    "Arc0_0_1 = add_arc(start= [1.5, 2.], end= [3.25, 0.], mid= [2.7, 1.4])",
    "Extrude0 = add_extrude(sketch= Sketch0,\n\toperation= 0, type= 0, extent_one= 39.2906, extent_two= 0.)",
] * 5

# (total parameters, language model without its output head), in billions, of the real models.
REAL_SIZES = {
    "openecad-0.89b": ((0.85, 0.95), (0.45, 0.52)),
    "tinyllava-gemma-siglip-2.4b": ((2.85, 3.0), (2.45, 2.55)),  # gemma-2b is 2.51B with its 524M embedding
    "tinyllava-phi2-siglip-3.1b": ((3.1, 3.3), (2.6, 2.7)),  # phi-2 is 2.78B with its untied 131M head
    "decoder-8b": ((8.5, 8.8), (7.5, 7.65)),  # Qwen3-8B is 8.19B with its untied 622M head
    "qwen2-vl-2b": ((2.18, 2.24), (1.5, 1.58)),  # Qwen2-VL-2B is 2.21B; Qwen2-1.5B 1.54B with its tied embedding
}
RENDER_TOKENS = {"qwen2-vl-2b": 324}
"""Image tokens of a 512 x 512 render: 729 for the SigLIP-so400m presets at 384 px, 18 x 18 merged patches for Qwen2-VL."""


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_has_its_real_models_size_vocabulary_and_image_tokens(name):
    model, processor = build_preset(name, CODE, torch.bfloat16, "meta")
    total = sum(parameter.numel() for parameter in model.parameters()) / 1e9
    language = sum(parameter.numel() for parameter in model.model.language_model.parameters()) / 1e9
    (low, high), (language_low, language_high) = REAL_SIZES[name]
    assert low < total < high and language_low < language < language_high
    text = model.config.text_config
    assert len(processor.tokenizer) == text.vocab_size == model.lm_head.out_features == PRESETS[name].text["vocab_size"]
    assert text.max_position_embeddings == PRESETS[name].context
    prompt = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "code?"}]}], add_generation_prompt=True)
    inputs = processor(images=[Image.new("RGB", (512, 512), "white")], text=[prompt], return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == RENDER_TOKENS.get(name, 729)


def test_a_preset_tokenizer_splits_digits_and_reads_back_exactly():
    _, processor = build_preset("openecad-0.89b", CODE, torch.bfloat16, "meta")
    tokenizer = processor.tokenizer
    line = "Line0_0_7 = add_line(start= [-4.2664, 18.2562], end= [-10.0211,  26.1937])"
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(line)["input_ids"])
    assert all(len(token.lstrip("Ġ")) == 1 for token in tokens if any(c.isdigit() for c in token))
    assert tokenizer.decode(tokenizer(line)["input_ids"]) == line
    assert max(max(tokenizer(text)["input_ids"]) for text in CODE) < 8192 <= len(tokenizer)


def test_a_preset_loads_labelled_as_random_weights_with_its_image_tokens():
    config = TrainConfig(base_model="preset:openecad-0.89b", dtype="bf16", device="meta")
    base = load_base_model(config, torch.device("meta"), torch.bfloat16, Path("unused"), CODE)
    assert base.source == "preset:openecad-0.89b (random weights, built from configs)" == described(config.base_model)
    prompt = base.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "code?"}]}], add_generation_prompt=True
    )
    inputs = base.processor(images=[Image.new("RGB", (512, 512), "white")], text=prompt, return_tensors="pt")
    assert int((inputs["input_ids"] == base.model.config.image_token_id).sum()) == 729
    assert inputs["pixel_values"].shape == (1, 3, 384, 384)
    assert base.model.lm_head.weight.dtype == torch.bfloat16 and base.model.lm_head.weight.shape == (32000, 1536)


def test_unknown_presets_and_untrusted_training_are_refused(tmp_path):
    with pytest.raises(ValueError, match="preset:openecad-0.89b"):
        preset_name("preset:openecad-9b")
    assert preset_name("tiny") is None and described("/models/x") == "/models/x"
    with pytest.raises(ValueError, match="random weights.*--train-preset"):
        run_training(TrainConfig(base_model="preset:decoder-8b"), tmp_path, tmp_path / "out", None, "run", {})
    assert not (tmp_path / "out").exists()


def test_a_qwen2_vl_style_model_trains_with_its_grid_positions_and_a_merger_as_connector(tmp_path, monkeypatch):
    """Qwen2-VL's shape at a test's size: the image's tokens follow its patch grid, the token types reach the model for
    its 3D positions (the loop's loss equals transformers' own), the merger trains in full as the connector, the rest
    of the tower stays frozen, and packing is refused."""
    from dataclasses import replace

    from cad_pipeline.train.data import padded_batch, prepare_samples
    from cad_pipeline.train.flops import flop_model
    from cad_pipeline.train.loop import answer_loss, train
    from cad_pipeline.train.model import make_trainable, trained_parts
    from cad_pipeline.train.plan import model_shape
    from cad_pipeline.train.presets import QWEN2_VL_TOWER
    from cad_pipeline.train.session import packs

    real = PRESETS["qwen2-vl-2b"]
    text = {**real.text, "vocab_size": 9000, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]}}  # fmt: skip
    vision = {**QWEN2_VL_TOWER, "depth": 2, "embed_dim": 32, "num_heads": 2, "hidden_size": 128}
    monkeypatch.setitem(PRESETS, "qwen2-vl-test", replace(real, name="qwen2-vl-test", text=text, vision=vision))
    images = tmp_path / "images"
    images.mkdir()
    records = []
    for index, size in enumerate((112, 168, 112, 168)):
        Image.new("RGB", (size, size), "white").save(images / f"m{index}_front.png")
        conversations = [{"from": "human", "value": "<image>\nWrite the CAD code."}, {"from": "gpt", "value": CODE[index]}]
        records.append({"id": f"m{index}_front", "image": f"m{index}_front.png", "conversations": conversations})
    config = TrainConfig(base_model="preset:qwen2-vl-test", max_steps=2, batch_size=2, checkpoint_every=0, max_length=512, packing="auto")
    base = load_base_model(config, torch.device("cpu"), torch.float32, tmp_path, CODE)
    model = make_trainable(base.model, config)
    assert trained_parts(model, config) == {"language_model": "lora r=16", "connector": "full", "vision_tower": "frozen"}
    samples = prepare_samples(records, images, base.processor, config.max_length).samples
    assert [sum(token == base.model.config.image_token_id for token in s.prompt_ids) for s in samples] == [16, 36, 16, 36]
    batch = padded_batch(samples[:2], base.processor)
    assert batch.inputs["mm_token_type_ids"].sum(1).tolist() == [16, 36]
    assert batch.inputs["image_grid_thw"].tolist() == [[1, 8, 8], [1, 12, 12]]
    summed, counted = answer_loss(model, batch)
    reference = model(**batch.inputs, labels=batch.labels).loss
    assert float(summed / counted) == pytest.approx(float(reference), rel=1e-5)
    shape = model_shape(model, base.processor, samples[1].image, torch.float32, packed=False)
    assert (shape.image_tokens, shape.vision_layers, shape.vision_hidden) == (144, 2, 32)
    assert flop_model(model, base.processor, samples[1], torch.device("cpu"), torch.float32).image_flops > 0
    assert packs(config, torch.device("cpu"), base) is False
    with pytest.raises(ValueError, match="packing 'on' cannot pack preset:qwen2-vl-test"):
        packs(replace(config, packing="on"), torch.device("cpu"), base)
    merger = {name: parameter.detach().clone() for name, parameter in model.named_parameters() if ".merger." in name and parameter.requires_grad}
    state = train(model, base.processor, samples, samples[:2], config, torch.device("cpu"), torch.float32, tmp_path / "checkpoints")
    assert state.step == 2 and all(record.loss > 0 for record in state.steps)
    assert merger and all(not torch.equal(parameter, merger[name]) for name, parameter in model.named_parameters() if name in merger)
