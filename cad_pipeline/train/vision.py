"""The tiny model's vision encoder: convolutions for line drawings, then a few transformer layers over the patches.

A ViT trained from scratch on a few thousand drawings learns the code's grammar through the language model long
before its patches say anything, and the model ends up writing the same program for every picture. Convolutions
see thin strokes, corners and circles from the first step (their weights are shared across the image, so every
drawing teaches every position), and the transformer layers on the final feature map (6 x 6 by default) relate the parts of a view.
Registered with transformers' Auto classes, so a LLaVA built around it saves and loads like any other.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

MODEL_TYPE = "cad_drawing_encoder"


class DrawingEncoderConfig(PretrainedConfig):
    model_type = MODEL_TYPE
    base_config_key = "vision_config"

    def __init__(
        self,
        image_size: int = 192,
        num_channels: int = 3,
        channels: tuple[int, ...] | list[int] = (32, 64, 128, 256),
        hidden_size: int = 256,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 4,
        intermediate_size: int = 512,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_size = image_size
        self.num_channels = num_channels
        self.channels = list(channels)
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.initializer_range = initializer_range

    @property
    def patch_size(self) -> int:
        """Pixels per side of one output token: each stage halves the resolution."""
        return 2 ** len(self.channels)

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class ConvStage(nn.Module):
    """Halve the resolution, then one more convolution; GroupNorm, since batches are small and vary in size."""

    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        self.down = nn.Conv2d(inputs, outputs, 3, stride=2, padding=1)
        self.down_norm = nn.GroupNorm(min(8, outputs), outputs)
        self.conv = nn.Conv2d(outputs, outputs, 3, padding=1)
        self.conv_norm = nn.GroupNorm(min(8, outputs), outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.down_norm(self.down(x)))
        return x + F.gelu(self.conv_norm(self.conv(x)))


class EncoderLayer(nn.Module):
    def __init__(self, config: DrawingEncoderConfig):
        super().__init__()
        self.heads = config.num_attention_heads
        self.attention_norm = nn.LayerNorm(config.hidden_size)
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.mlp_norm = nn.LayerNorm(config.hidden_size)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(self.attention_norm(x)).view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, length, width)
        x = x + self.out(attended)
        return x + self.fc2(F.gelu(self.fc1(self.mlp_norm(x))))


class DrawingEncoder(PreTrainedModel):
    config_class = DrawingEncoderConfig
    main_input_name = "pixel_values"
    base_model_prefix = "drawing_encoder"
    _supports_sdpa = True
    _supports_flash_attn = True

    def __init__(self, config: DrawingEncoderConfig):
        super().__init__(config)
        widths = [config.num_channels, *config.channels]
        self.stages = nn.ModuleList(ConvStage(widths[i], widths[i + 1]) for i in range(len(config.channels)))
        self.to_hidden = nn.Linear(config.channels[-1], config.hidden_size)
        self.position = nn.Parameter(torch.zeros(1, config.tokens, config.hidden_size))
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """He initialisation for the convolutions (GELU stacks), small normals elsewhere."""
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
            nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, DrawingEncoder):
            nn.init.normal_(module.position, std=1 / math.sqrt(self.config.hidden_size))

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutput:
        x = pixel_values.to(self.to_hidden.weight.dtype)
        for stage in self.stages:
            x = stage(x)
        tokens = self.to_hidden(x.flatten(2).transpose(1, 2)) + self.position
        for layer in self.layers:
            tokens = layer(tokens)
        tokens = self.norm(tokens)
        return BaseModelOutput(last_hidden_state=tokens, hidden_states=(tokens,))


AutoConfig.register(MODEL_TYPE, DrawingEncoderConfig, exist_ok=True)
AutoModel.register(DrawingEncoderConfig, DrawingEncoder, exist_ok=True)
