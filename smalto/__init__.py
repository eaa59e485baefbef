"""smalto: one Transformer for text and images, trained by next-token prediction."""

__version__ = "0.1.0"
