"""Tokenizers: byte-level BPE for text, a learned quantizing autoencoder for images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smalto.errors import SmaltoError
from smalto.paths import inside
from smalto.tokenizers.image import ImageTokenizer, ImageTokenizerConfig
from smalto.tokenizers.text import SPECIAL_TOKENS, TextTokenizer

DEFAULT_TOKENIZERS = Path(__file__).resolve().parent.parent / "assets" / "tokenizers"

__all__ = ["DEFAULT_TOKENIZERS", "SPECIAL_TOKENS", "ImageTokenizer", "ImageTokenizerConfig", "TextTokenizer",
           "Tokenizers", "load_tokenizers"]


@dataclass
class Tokenizers:
    text: TextTokenizer
    image: ImageTokenizer
    path: Path


def load_tokenizers(path: str | Path | None = None) -> Tokenizers:
    """Load a directory written by `smalto tokenizer train`; None loads the shipped default."""
    path = Path(path) if path is not None else DEFAULT_TOKENIZERS
    if not path.is_dir():
        raise SmaltoError(f"{path}: not a tokenizer directory (expected text.json, image.json, image.safetensors)")
    return Tokenizers(TextTokenizer.load(inside(path, "text.json", "file")), ImageTokenizer.load(path), path)
