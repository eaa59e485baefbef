"""Inference: the engine (the only loop over tokens), its logits processors and strategies, and the
incremental detokenizer."""

from smalto.inference.detok import Detokenizer
from smalto.inference.engine import Engine, Generation, Prompt, Step
from smalto.inference.strategies import Sampling

__all__ = ["Detokenizer", "Engine", "Generation", "Prompt", "Sampling", "Step"]
