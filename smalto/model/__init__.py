"""The decoder: one Transformer over one stream of tokens; it knows nothing of tasks. Pictures are codes in
the stream, or pixels beside it for the projector and cross-attention designs (`fusion`)."""

from smalto.model.config import MAX_CONTEXT, MAX_LAYERS, PRESETS, ModelConfig, preset
from smalto.model.kv_cache import KVCache
from smalto.model.transformer import Output, Transformer

__all__ = ["MAX_CONTEXT", "MAX_LAYERS", "PRESETS", "KVCache", "ModelConfig", "Output", "Transformer", "preset"]
