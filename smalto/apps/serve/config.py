"""What `smalto serve` can be told: limits, auth and batching."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from smalto.data.gate import BUDGET_PICTURES, MAX_PIXELS
from smalto.options import Range


@dataclass
class ServeConfig:
    model_name: str = "smalto"  # the id clients ask for
    api_key: str | None = None  # when set, /v1/* needs "Authorization: Bearer <key>"
    max_queue: int = 64  # requests waiting for the model; more are refused with 503
    max_batch: int = 16  # rows decoded together
    timeout: float = 60.0  # seconds a request may take, queue wait included
    max_body_bytes: int = 16 * 2**20
    max_image_pixels: int = MAX_PIXELS  # larger images are refused (400 invalid_image) before decoding
    max_request_pixels: int = BUDGET_PICTURES * MAX_PIXELS  # all of a request's pictures and clip frames
    readers: int = 2  # threads that decode images and tokenize; bounds the memory decoding can take

    # Valid values, read by __post_init__ and by `smalto serve`'s flags.
    RANGES: ClassVar[dict[str, Range]] = {
        **dict.fromkeys(("max_queue", "max_batch", "max_body_bytes", "max_image_pixels", "max_request_pixels",
                         "readers"),
                        Range(1, integer=True)),
        "timeout": Range(0, low_open=True)}

    def __post_init__(self) -> None:
        for name, valid in self.RANGES.items():
            valid.check(getattr(self, name), name)
