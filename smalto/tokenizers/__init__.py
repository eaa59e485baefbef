"""Tokenizers: byte-level BPE for text, a learned quantizing autoencoder for images, and (when a
directory has them) a causal video tokenizer on the image codebook and a causal audio codec."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from smalto.assets import DEFAULT_MODEL
from smalto.errors import SmaltoError
from smalto.paths import inside
from smalto.tokenizers.audio import AudioCodec
from smalto.tokenizers.image import ImageTokenizer, ImageTokenizerConfig
from smalto.tokenizers.text import SPECIAL_TOKENS, TextTokenizer
from smalto.tokenizers.video import VideoTokenizer

# The shipped model's own copy, the one copy of the shipped tokenizers (their training logs beside them).
DEFAULT_TOKENIZERS = DEFAULT_MODEL / "tokenizers"

__all__ = ["AudioCodec", "DEFAULT_TOKENIZERS", "FILES", "SPECIAL_TOKENS", "ImageTokenizer", "ImageTokenizerConfig",
           "TextTokenizer", "Tokenizers", "VideoTokenizer", "load_tokenizers"]


# What a tokenizer directory holds that matters (train.json: how it was made, optional).
FILES = ("text.json", "image.json", "image.safetensors", "train.json", "video.json", "video.safetensors",
         "audio.json", "audio.safetensors")


@dataclass
class Tokenizers:
    text: TextTokenizer
    image: ImageTokenizer
    path: Path
    video: VideoTokenizer | None = None
    audio: AudioCodec | None = None

    def copy_to(self, directory: Path) -> None:
        """Copy the files that make these tokenizers into `directory`, and nothing else: no logs or
        plots, and no file a symlink would bring in from outside their folder (a checkpoint from
        someone else, packed or exported, must not carry the user's files on)."""
        directory.mkdir(parents=True, exist_ok=True)
        absent = {part for part in ("video", "audio") if getattr(self, part) is None}  # taken without them
        for name in FILES:
            if name.split(".")[0] in absent:
                continue
            if (source := inside(self.path, name, "file")).is_file():
                shutil.copyfile(source, directory / name)


def load_tokenizers(path: str | Path | None = None) -> Tokenizers:
    """Load a directory written by `smalto tokenizer train`; None loads the shipped default."""
    path = Path(path) if path is not None else DEFAULT_TOKENIZERS
    if not path.is_dir():
        raise SmaltoError(f"{path}: not a tokenizer directory (expected text.json, image.json, image.safetensors)")
    image = ImageTokenizer.load(path)
    video = VideoTokenizer.load(path, image) if inside(path, "video.json", "file").exists() else None
    audio = AudioCodec.load(path) if inside(path, "audio.json", "file").exists() else None
    return Tokenizers(TextTokenizer.load(inside(path, "text.json", "file")), image, path, video, audio)
