"""Byte-level BPE for text (HF `tokenizers`), with smalto's reserved special tokens.

Byte-level means every UTF-8 string round-trips exactly, whatever it holds (Cyrillic, emoji,
control characters): unknown text falls back to byte tokens instead of <unk>. Special tokens
are never produced from user text: "<|boi|>" typed by a user is encoded as ordinary bytes, so
text can not forge an image or a turn boundary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from smalto import atomic
from smalto.data.gate import unicode_text
from smalto.errors import SmaltoError

SPECIAL_TOKENS = (
    "<|bos|>", "<|eos|>", "<|pad|>",
    "<|boi|>", "<|eoi|>",  # begin / end of image
    "<|bov|>", "<|eov|>", "<|eof|>",  # begin / end of video, end of frame
    "<|user|>", "<|assistant|>",
    "<|think|>", "<|/think|>",
    "<|reserved_0|>", "<|reserved_1|>",  # room to grow without retraining (in use: format.vocab, format.render)
    "<|boa|>", "<|eoa|>",  # begin / end of audio: once reserved_2 and reserved_3 (`RENAMED`)
)
# Special tokens given a name after tokenizers were trained with them reserved: same ids, new names.
RENAMED = {"<|reserved_2|>": "<|boa|>", "<|reserved_3|>": "<|eoa|>"}


class TextTokenizer:
    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        tokenizer.encode_special_tokens = True  # user text never yields special ids
        self.special = {name: tokenizer.token_to_id(name) for name in SPECIAL_TOKENS}
        missing = [n for n, i in self.special.items() if i is None]
        if missing:
            raise SmaltoError(f"text tokenizer lacks special tokens {missing}")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 512) -> "TextTokenizer":
        floor = 256 + len(SPECIAL_TOKENS)
        if vocab_size < floor:
            raise SmaltoError(f"text vocab_size must be at least {floor} (bytes + special tokens), got {vocab_size}")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def load(cls, path: str | Path) -> "TextTokenizer":
        try:
            text = Path(path).read_text()
            for old, new in RENAMED.items():  # (a tokenizer trained before the tokens had names)
                text = text.replace(f'"{old}"', f'"{new}"') if f'"{new}"' not in text else text
            return cls(Tokenizer.from_str(text))
        except Exception as e:  # tokenizers raises a bare Exception on bad files
            raise SmaltoError(f"{path}: not a readable tokenizer file ({e})") from None

    def save(self, path: str | Path) -> None:
        atomic.write_text(path, self.tokenizer.to_str(pretty=True))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """The ids of a text; a SmaltoError for one that is not Unicode text (a lone surrogate:
        bytes that were not UTF-8 on the command line, or an escaped half pair over HTTP)."""
        return self.tokenizer.encode(unicode_text(text), add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def __call__(self, text: str) -> list[int]:
        return self.encode(text)
