"""What ships inside the package: the default model, its tokenizers beside its weights, and the
speech recogniser that judges spoken words (trained apart from the model)."""

from pathlib import Path

DEFAULT_MODEL = Path(__file__).resolve().parent / "model"
DEFAULT_RECOGNISER = Path(__file__).resolve().parent / "recogniser"
