"""TinyLLaVA Factory checkpoints, in both on-disk layouts, load as native LLaVA models that compute what TinyLLaVA computes.

The checkpoints are tiny and random, written the way TinyLLaVA saves them; the reference values come from the
original modules run the way TinyLLaVA runs them (tinyllava/model/modeling_tinyllava.py, vision_tower/base.py).
"""

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from cad_pipeline.train.tinyllava import TINYLLAVA_PROMPT, TinyLlavaParts, is_tinyllava_checkpoint, load_tinyllava

IMAGE_SIZE, PATCH_SIZE = 64, 16
PATCHES = (IMAGE_SIZE // PATCH_SIZE) ** 2
LLM_HUB_ID = "Qwen/Qwen2-0.5B"
LORA_RANK, LORA_ALPHA = 4, 8


@dataclass
class Original:
    """The modules a TinyLLaVA checkpoint was saved from, and TinyLLaVA's way of running them."""

    text_config: Qwen2Config
    vision_config: SiglipVisionConfig
    language_model: torch.nn.Module
    vision_tower: SiglipVisionModel
    connector: torch.nn.Sequential

    @torch.no_grad()
    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """encode_images: hidden_states[-2], strategy 'patch' drops the first token, then the connector."""
        hidden = self.vision_tower(pixel_values, output_hidden_states=True).hidden_states[-2]
        return self.connector(hidden[:, 1:])

    @torch.no_grad()
    def logits_around_image(self, before: torch.Tensor, after: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        """prepare_inputs_labels_for_multimodal: the image features replace the single -200 id between the two texts."""
        embed = self.language_model.get_input_embeddings()
        spliced = torch.cat([embed(before), self.image_features(pixel_values)[0], embed(after)])
        return self.language_model(inputs_embeds=spliced[None]).logits


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE without an `<image>` token, which the loader must add."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    texts = ["USER: draw this part ASSISTANT: Of course, here are the codes", "SketchPlane Loop Line Arc", "a cube of side 10"]
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def build_original(vocab_size: int, tie_word_embeddings: bool, seed: int) -> Original:
    torch.manual_seed(seed)
    text = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tie_word_embeddings,
    )
    # Two layers, so hidden_states[-2] is an encoder layer's output rather than the patch embeddings.
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
    )
    language_model = AutoModelForCausalLM.from_config(copy.deepcopy(text)).eval()
    vision_tower = SiglipVisionModel(copy.deepcopy(vision)).eval()
    connector = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 64))
    return Original(text, vision, language_model, vision_tower, connector)


def tinyllava_config(original: Original, **changes) -> dict:
    """config.json as TinyLlavaConfig writes it: hub ids for each part, the part configs inlined."""
    config = {
        "model_type": "tinyllava",
        "architectures": ["TinyLlavaForConditionalGeneration"],
        "llm_model_name_or_path": LLM_HUB_ID,
        "tokenizer_name_or_path": LLM_HUB_ID,
        "vision_model_name_or_path": "google/siglip-so400m-patch14-384",
        "connector_type": "mlp2x_gelu",
        # TinyLLaVA trains in fp16 and records the tower's hub name on its config.
        "text_config": original.text_config.to_dict() | {"torch_dtype": "float16"},
        "vision_config": original.vision_config.to_dict()
        | {"torch_dtype": "float16", "model_name_or_path": "google/siglip-so400m-patch14-384", "model_name_or_path2": ""},
        "hidden_size": 64,
        "vision_hidden_size": 32,
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "patch",
        "image_token_index": -200,
        "ignore_index": -100,
        "tokenizer_model_max_length": 256,
        "tokenizer_padding_side": "right",
        "pad_token": "<unk>",
        "image_aspect_ratio": "square",
    }
    return config | changes


def legacy_vision_keys(state: dict) -> dict:
    """transformers 4.x, which TinyLLaVA ran on, named SigLIP's weights under `vision_model.`."""
    return {f"vision_model.{key}": value for key, value in state.items()}


def write_hub_layout(original: Original, tokenizer, folder: Path) -> Path:
    """Released OpenECAD/TinyLLaVA layout: config.json, one model.safetensors under the whole model's names, tokenizer."""
    folder.mkdir(parents=True)
    weights = {f"language_model.{key}": value for key, value in original.language_model.state_dict().items()}
    if original.text_config.tie_word_embeddings:
        del weights["language_model.lm_head.weight"]
    vision = legacy_vision_keys(original.vision_tower.state_dict())
    weights |= {f"vision_tower._vision_tower.{key}": value for key, value in vision.items()}
    weights |= {f"connector._connector.{key}": value for key, value in original.connector.state_dict().items()}
    save_file({key: value.contiguous() for key, value in weights.items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(tinyllava_config(original)))
    tokenizer.save_pretrained(folder)
    return folder


def parameters(module: torch.nn.Module) -> dict:
    return {key: value.detach().clone() for key, value in module.named_parameters()}


def write_training_layout(original: Original, tokenizer, folder: Path) -> Path:
    """TinyLLaVA's training output: config.json, tokenizer, and each part's parameters in its own folder."""
    for part in ("language_model", "vision_tower", "connector"):
        (folder / part).mkdir(parents=True)
    torch.save(parameters(original.language_model), folder / "language_model" / "pytorch_model.bin")
    original.text_config.save_pretrained(folder / "language_model")
    torch.save(legacy_vision_keys(parameters(original.vision_tower)), folder / "vision_tower" / "pytorch_model.bin")
    original.vision_config.save_pretrained(folder / "vision_tower")
    connector = {f"_connector.{key}": value for key, value in parameters(original.connector).items()}
    torch.save(connector, folder / "connector" / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(tinyllava_config(original)))
    tokenizer.save_pretrained(folder)
    return folder


LORA_TARGETS = (
    "language_model.model.layers.0.self_attn.q_proj",
    "vision_tower._vision_tower.vision_model.encoder.layers.1.mlp.fc1",
)


def add_lora_adapter(folder: Path) -> dict[str, torch.Tensor]:
    """Turn a training-layout folder into a LoRA run's output: base weights under `.base_layer.`, adapter beside them.
    Returns each adapted weight as merging must leave it."""
    generator = torch.Generator().manual_seed(7)
    adapter, merged = {}, {}
    for target in LORA_TARGETS:
        part = "language_model" if target.startswith("language_model.") else "vision_tower"
        prefix = "language_model." if part == "language_model" else "vision_tower._vision_tower."
        module = target.removeprefix(prefix)
        file = folder / part / "pytorch_model.bin"
        weights = torch.load(file, weights_only=True)
        base = weights[f"{module}.weight"]
        for kind in ("weight", "bias"):
            weights[f"{module}.base_layer.{kind}"] = weights.pop(f"{module}.{kind}")
        torch.save(weights, file)
        down = torch.randn(LORA_RANK, base.shape[1], generator=generator)
        up = torch.randn(base.shape[0], LORA_RANK, generator=generator)
        adapter[f"base_model.model.{target}.lora_A.weight"] = down
        adapter[f"base_model.model.{target}.lora_B.weight"] = up
        merged[target] = base + LORA_ALPHA / LORA_RANK * up @ down
    save_file(adapter, folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": LORA_RANK, "lora_alpha": LORA_ALPHA}))
    return merged


@dataclass
class Loaded:
    original: Original
    folder: Path
    model: torch.nn.Module
    processor: object


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def hub(tmp_path_factory, tokenizer):
    """Tied embeddings, as Gemma and OpenELM have: the checkpoint holds no lm_head."""
    original = build_original(len(tokenizer), tie_word_embeddings=True, seed=0)
    folder = write_hub_layout(original, tokenizer, tmp_path_factory.mktemp("tinyllava") / "hub")
    return Loaded(original, folder, *load_tinyllava(TinyLlavaParts(folder)))


@pytest.fixture(scope="module")
def training(tmp_path_factory, tokenizer):
    original = build_original(len(tokenizer), tie_word_embeddings=False, seed=1)
    folder = write_training_layout(original, tokenizer, tmp_path_factory.mktemp("tinyllava") / "training")
    return Loaded(original, folder, *load_tinyllava(TinyLlavaParts(folder)))


@pytest.fixture(params=["hub", "training"])
def loaded(request):
    return request.getfixturevalue(request.param)


def random_image(seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_prompt_is_tinyllavas_llama_template():
    assert TINYLLAVA_PROMPT.format(system="S", question="Q") == "S USER: <image>\nQ ASSISTANT:"


def test_chat_template_writes_the_prompt_with_openecads_system(hub):
    processor = hub.processor
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]}
    prompt = processor.apply_chat_template([user], add_generation_prompt=True)
    assert prompt.startswith("A conversation between a curious user") and "OpenECAD style code" in prompt
    assert prompt.endswith(" USER: <image>\nQ ASSISTANT:")
    system = {"role": "system", "content": [{"type": "text", "text": "S"}]}
    answer = {"role": "assistant", "content": [{"type": "text", "text": "A"}]}
    assert processor.apply_chat_template([system, user, answer]) == "S USER: <image>\nQ ASSISTANT: A</s>"


def test_recognises_tinyllava_checkpoints(hub, training, tmp_path):
    assert is_tinyllava_checkpoint(hub.folder) and is_tinyllava_checkpoint(training.folder)
    assert not is_tinyllava_checkpoint(tmp_path / "missing")
    assert not is_tinyllava_checkpoint(training.folder / "language_model")


def test_language_model_logits_equal_the_original(loaded):
    original, model, processor = loaded.original, loaded.model, loaded.processor
    ids = processor.tokenizer("a cube of side 10", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        native = model(input_ids=ids).logits
        expected = original.language_model(input_ids=ids).logits
    assert native.shape[-1] == expected.shape[-1] + 1, "the <image> token adds one row"
    assert (native[..., : expected.shape[-1]] - expected).abs().max() < 1e-5


def test_projector_is_the_connector(loaded):
    original, model = loaded.original, loaded.model
    projector = model.model.multi_modal_projector
    for native, tinyllava in ((projector.linear_1, original.connector[0]), (projector.linear_2, original.connector[2])):
        assert torch.equal(native.weight, tinyllava.weight) and torch.equal(native.bias, tinyllava.bias)
    x = torch.linspace(-3, 3, 13)
    assert torch.equal(projector.act(x), original.connector[1](x)), "TinyLLaVA's nn.GELU is the exact one, not the tanh one"


def test_image_features_drop_the_first_patch_like_tinyllava(loaded):
    original, model, processor = loaded.original, loaded.model, loaded.processor
    pixel_values = processor.image_processor(random_image(), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        native = torch.stack(model.get_image_features(pixel_values=pixel_values).pooler_output)
    expected = original.image_features(pixel_values)
    assert native.shape == expected.shape == (1, PATCHES - 1, 64)
    assert (native - expected).abs().max() < 1e-5


def test_image_prompt_gives_tinyllavas_logits_and_a_finite_loss(loaded):
    original, model, processor = loaded.original, loaded.model, loaded.processor
    tokenizer = processor.tokenizer
    assert model.config.image_seq_length == PATCHES - 1
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids("<image>") == len(tokenizer) - 1
    assert model.get_input_embeddings().num_embeddings == model.config.text_config.vocab_size == len(tokenizer)
    text = TINYLLAVA_PROMPT.format(system="S", question="draw this part") + " a cube</s>"
    inputs = processor(text=text, images=random_image(), return_tensors="pt")
    ids = inputs["input_ids"][0]
    image_positions = (ids == model.config.image_token_id).nonzero().flatten()
    assert len(image_positions) == PATCHES - 1
    assert torch.equal(image_positions, torch.arange(image_positions[0], image_positions[-1] + 1))
    with torch.no_grad():
        output = model(**inputs, labels=inputs["input_ids"])
        expected = original.logits_around_image(ids[: image_positions[0]], ids[image_positions[-1] + 1 :], inputs["pixel_values"])
    assert torch.isfinite(output.loss)
    assert (output.logits[..., : expected.shape[-1]] - expected).abs().max() < 1e-4


def test_saved_and_reloaded_like_any_transformers_model(hub, tmp_path):
    model, processor = hub.model, hub.processor
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path, local_files_only=True).eval()
    reprocessor = AutoProcessor.from_pretrained(tmp_path, local_files_only=True)
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]}
    prompt = reprocessor.apply_chat_template([user], add_generation_prompt=True)
    assert prompt == processor.apply_chat_template([user], add_generation_prompt=True)
    inputs = reprocessor(text=prompt, images=random_image(), return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).logits, model(**inputs).logits)


def test_tokenizer_is_set_up_as_tinyllava_trained_it(hub):
    tokenizer = hub.processor.tokenizer
    assert (tokenizer.pad_token, tokenizer.model_max_length, tokenizer.padding_side) == ("<unk>", 256, "right")
    image = tokenizer.convert_tokens_to_ids("<image>")
    assert tokenizer("USER: <image>\nQ", add_special_tokens=False)["input_ids"].count(image) == 1


def test_image_processor_is_tinyllavas_siglip_default(hub):
    image_processor = hub.processor.image_processor
    assert isinstance(image_processor, SiglipImageProcessorPil)
    assert image_processor.size == {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    assert list(image_processor.image_mean) == list(image_processor.image_std) == [0.5] * 3


def test_lora_run_output_is_merged(tmp_path, tokenizer):
    original = build_original(len(tokenizer), tie_word_embeddings=False, seed=2)
    folder = write_training_layout(original, tokenizer, tmp_path / "lora")
    merged = add_lora_adapter(folder)
    model, _ = load_tinyllava(TinyLlavaParts(folder))
    native = model.state_dict()
    language_target, vision_target = LORA_TARGETS
    for target, native_key in (
        (language_target, "model.language_model.layers.0.self_attn.q_proj.weight"),
        (vision_target, "model.vision_tower.encoder.layers.1.mlp.fc1.weight"),
    ):
        assert (native[native_key] - merged[target]).abs().max() < 1e-5


def copy_without(folder: Path, destination: Path, *, tokenizer: bool, text_config: bool) -> Path:
    """A hub-layout checkpoint that leaves parts to the hub ids its config.json names."""
    destination.mkdir()
    shutil.copy(folder / "model.safetensors", destination)
    config = json.loads((folder / "config.json").read_text())
    if not text_config:
        del config["text_config"]
    (destination / "config.json").write_text(json.dumps(config))
    if tokenizer:
        for file in folder.glob("tokenizer*"):
            shutil.copy(file, destination)
    return destination


def test_a_part_named_by_hub_id_needs_a_local_folder(hub, tmp_path):
    original, folder = hub.original, hub.folder
    checkpoint = copy_without(folder, tmp_path / "bare", tokenizer=False, text_config=False)
    with pytest.raises(FileNotFoundError, match=rf"'{LLM_HUB_ID}' \(llm_model_name_or_path\).*TinyLlavaParts\.language_model"):
        load_tinyllava(TinyLlavaParts(checkpoint))
    language_model = tmp_path / "language_model"
    original.text_config.save_pretrained(language_model)
    with pytest.raises(FileNotFoundError, match=rf"'{LLM_HUB_ID}' \(tokenizer_name_or_path\).*TinyLlavaParts\.tokenizer"):
        load_tinyllava(TinyLlavaParts(checkpoint, language_model=language_model))


def test_local_part_folders_fill_what_the_checkpoint_lacks(hub, tokenizer, tmp_path):
    original, folder = hub.original, hub.folder
    checkpoint = copy_without(folder, tmp_path / "bare", tokenizer=False, text_config=False)
    language_model, tokenizer_folder, vision_tower = tmp_path / "language_model", tmp_path / "tokenizer", tmp_path / "vision_tower"
    original.text_config.save_pretrained(language_model)
    tokenizer.save_pretrained(tokenizer_folder)
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    SiglipImageProcessorPil(size=size, image_mean=[0.25] * 3, image_std=[0.5] * 3).save_pretrained(vision_tower)
    model, processor = load_tinyllava(TinyLlavaParts(checkpoint, language_model, vision_tower, tokenizer_folder))
    assert list(processor.image_processor.image_mean) == [0.25] * 3
    ids = processor.tokenizer("a cube", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        native, expected = model(input_ids=ids).logits, original.language_model(input_ids=ids).logits
    assert (native[..., : expected.shape[-1]] - expected).abs().max() < 1e-5


def test_dtype_is_the_callers_not_the_configs(hub):
    assert {parameter.dtype for parameter in hub.model.parameters()} == {torch.float32}
    model, _ = load_tinyllava(TinyLlavaParts(hub.folder), dtype=torch.bfloat16)
    assert {parameter.dtype for parameter in model.parameters()} == {torch.bfloat16}


def test_a_sentencepiece_tokenizer_without_sentencepiece_is_refused(hub, tmp_path, monkeypatch):
    """OpenECAD ships only tokenizer.model; without sentencepiece transformers would misread it as a tiktoken file."""
    checkpoint = copy_without(hub.folder, tmp_path / "sentencepiece", tokenizer=False, text_config=True)
    (checkpoint / "tokenizer.model").write_bytes(b"not read")
    monkeypatch.setattr("cad_pipeline.train.tinyllava.find_spec", lambda name: None)
    with pytest.raises(ImportError, match="only a SentencePiece tokenizer.model: reading it needs the sentencepiece package"):
        load_tinyllava(TinyLlavaParts(checkpoint))


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"text_config": {"model_type": "openelm"}}, r"OpenELM, which transformers has no native class for.*Convert"),
        ({"text_config": {"model_type": "phi"}}, r"Phi, whose lm_head has a bias"),
        ({"connector_type": "mlp3x_gelu"}, r"config\.json: connector_type 'mlp3x_gelu' has no LLaVA equivalent"),
    ],
)
def test_unmappable_checkpoints_are_refused_with_the_reason(hub, tmp_path, change, error):
    config = json.loads((hub.folder / "config.json").read_text()) | change
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=error):
        load_tinyllava(TinyLlavaParts(tmp_path))
