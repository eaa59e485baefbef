"""The sequence format: the unified vocabulary, how each task is written as tokens with their
positions, and what may legally come next while decoding."""

from smalto.format.grammar import DRAWING, Allowed, FormatState, positions
from smalto.format.render import (PICTURE, Example, answer_example, answer_prompt, caption_example, caption_prompt,
                                  chat_example, chat_prompt, continue_example, continue_prompt, convert_example,
                                  convert_prompt, draw_example,
                                  draw_prompt, fuse, fuse_ids, picture_starts, think_example)
from smalto.format.vocab import Carrying, Modality, Span, Vocab, join

__all__ = ["DRAWING", "PICTURE", "Allowed", "Carrying", "Example", "FormatState", "Modality", "Span", "Vocab",
           "answer_example", "answer_prompt", "caption_example", "caption_prompt", "chat_example", "chat_prompt",
           "continue_example", "continue_prompt", "convert_example", "convert_prompt", "draw_example", "draw_prompt",
           "fuse", "fuse_ids", "picture_starts",
           "join", "positions", "think_example"]
