"""The default base model: a small LLaVA (a convolutional drawing encoder, a Qwen2-style decoder) built from configs.

No weights are downloaded: the model starts from random weights, and its byte-level BPE tokenizer
is trained on the partition's answers, so CAD code tokenizes into few tokens. It is saved as an
ordinary transformers folder and loaded back through `AutoModelForImageTextToText` and
`AutoProcessor`, the same path a real base model takes (the encoder registers itself with the
Auto classes when `cad_pipeline.train.vision` is imported).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
)

from cad_pipeline.train.vision import DrawingEncoderConfig

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", IMAGE_TOKEN]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n{% else %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% else %} ASSISTANT: {% for part in message['content'] %}{{ part['text'] }}{% endfor %}</s>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %} ASSISTANT: {% endif %}"
)
"""TinyLLaVA's llama template without a system prompt: `USER: <image>\\n{question} ASSISTANT: {answer}</s>`."""


@dataclass(frozen=True)
class TinyShape:
    """Sizes of the tiny model; the defaults give about 6.6M parameters and 36 image tokens (192 px, 32 px per token).

    Sized for a CPU: on 2 cores it trains 3.2 times the samples per second of the earlier hidden 384 x 6 layers with
    144 image tokens (13.6M), and after 10 minutes on `1k` its validation loss is lower (2.97 against 3.97 nats per
    token, one thread each).

    `vision_encoder` is `drawing` (convolutions, then `vision_layers` transformer layers; `patch_size` must be a
    power of two, one halving stage per factor 2, the last stage `vision_hidden` wide) or `siglip` (a plain ViT).
    """

    vocab_size: int = 4096
    hidden: int = 256
    intermediate: int = 768
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    vision_hidden: int = 256
    vision_intermediate: int = 512
    vision_layers: int = 2
    vision_heads: int = 4
    image_size: int = 192
    patch_size: int = 32
    max_positions: int = 4096
    vision_encoder: str = "drawing"


INK_ZERO = 1.0
"""The image mean: white paper normalizes to 0, so the convolutions' zero padding looks like paper, and strokes are
what carries signal."""


def vision_config(shape: TinyShape):
    sizes = {
        "hidden_size": shape.vision_hidden,
        "intermediate_size": shape.vision_intermediate,
        "num_hidden_layers": shape.vision_layers,
        "num_attention_heads": shape.vision_heads,
        "image_size": shape.image_size,
    }
    if shape.vision_encoder == "siglip":
        return SiglipVisionConfig(**sizes, patch_size=shape.patch_size)
    stages = shape.patch_size.bit_length() - 1
    if shape.vision_encoder != "drawing" or 2**stages != shape.patch_size:
        raise ValueError(f"tiny vision encoder must be 'drawing' (patch size a power of two) or 'siglip'; got {shape.vision_encoder!r}, patch {shape.patch_size}")
    return DrawingEncoderConfig(**sizes, channels=[max(8, shape.vision_hidden >> (stages - 1 - stage)) for stage in range(stages)])


NUMBER_PIECE = r"\d+\.?\d*"
"""Digits with their decimal point: a number's pieces merge only among themselves, so frequent numbers become one token,
while the code between numbers (`], end= [-`, ` = add_line(start= [`) merges freely across spaces and punctuation."""


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE on the given texts: every string stays encodable, and frequent code fragments become one token.

    GPT-2's pre-tokenizer would split the code at every space and underscore, so `add_line(start= [` alone would cost
    seven tokens; split at numbers only, a DeepCAD answer takes about 2.5 times fewer tokens (median 202 against 502
    on `1k`), which makes training that much cheaper and leaves each token more to learn from the picture."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(NUMBER_PIECE), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        chat_template=CHAT_TEMPLATE,
    )


def write_tiny_model(texts: Iterable[str], folder: Path, shape: TinyShape = TinyShape(), seed: int = 0) -> Path:
    """Build the tiny model and its processor, save both to `folder` and return it."""
    tokenizer = train_tokenizer(texts, shape.vocab_size)
    image_tokens = (shape.image_size // shape.patch_size) ** 2
    image_processor = SiglipImageProcessorPil(
        size={"height": shape.image_size, "width": shape.image_size}, image_mean=[INK_ZERO] * 3, image_std=[0.5] * 3
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=shape.patch_size,
        vision_feature_select_strategy="full",
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=0,
        chat_template=CHAT_TEMPLATE,
    )
    vision = vision_config(shape)
    text = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=shape.max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        use_cache=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_seq_length=image_tokens,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
