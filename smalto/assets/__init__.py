"""What ships inside the package: the default model, its tokenizers beside its weights."""

from pathlib import Path

DEFAULT_MODEL = Path(__file__).resolve().parent / "model"
