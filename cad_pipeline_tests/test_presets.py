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
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_has_its_real_models_size_vocabulary_and_image_tokens(name):
    model, processor = build_preset(name, CODE, torch.bfloat16, "meta")
    total = sum(parameter.numel() for parameter in model.parameters()) / 1e9
    language = sum(parameter.numel() for parameter in model.model.language_model.parameters()) / 1e9
    (low, high), (language_low, language_high) = REAL_SIZES[name]
    assert low < total < high and language_low < language < language_high
    text = model.config.text_config
    assert len(processor.tokenizer) == text.vocab_size == model.lm_head.out_features == PRESETS[name].text["vocab_size"]
    assert model.config.image_seq_length == 729 and model.config.vision_feature_layer == -2
    assert text.max_position_embeddings == PRESETS[name].context


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
