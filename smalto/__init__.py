"""smalto: one Transformer for text and images, trained by next-token prediction."""

__version__ = "0.1.0"


def load(path=None, dtype="auto", compile=False, adapter=None):
    """A model that captions, answers and draws: `smalto.load()` is the shipped default,
    `smalto.load("runs/x")` a directory written by `smalto train`, `adapter=` a LoRA or
    prompt-tuning directory from `smalto finetune` on top of it. See smalto.pipeline.load."""
    from smalto.pipeline import load as _load

    return _load(path, dtype, compile, adapter)
