"""Reading an image a user hands us, from a file or from bytes, through the decoding gate.

`smalto.data.gate` checks the declared size before a pixel is decoded and turns every decoder
error into a one-line SmaltoError; this module converts what it lets through.

Images are converted, not rejected, when the fix is unambiguous: grayscale (8 or 16 bit), palette
and CMYK images become RGB; EXIF rotation is applied; transparency is composited over white; a
non-square image is centre-cropped to a square; any other size is resized (Lanczos) to the
configured side.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from smalto.data.gate import MAX_PIXELS, Budget, opened

EXIF_ORIENTATION = 0x0112


def load_image(source: str | Path | bytes | Image.Image, size: int, max_pixels: int | None = MAX_PIXELS,
               name: str | None = None, budget: Budget | None = None) -> np.ndarray:
    """An image file (a path, its bytes, or a PIL image opened lazily) as uint8 [size, size, 3],
    converted as the module says.

    The declared size is checked against `max_pixels` (and charged to `budget`) before decoding;
    every problem is a SmaltoError that starts with `name` (default: the path, or "image")."""
    name = name or (str(source) if isinstance(source, (str, Path)) else "image")
    with opened(source, name, max_pixels) as img:
        if budget is not None:
            budget.charge(img.size[0] * img.size[1], name)
        if img.format == "JPEG":  # decode at 1/2..1/8 scale when that still leaves >= size
            img.draft("RGB", (size, size))
        return convert_image(img, size)


def convert_image(img: Image.Image, size: int) -> np.ndarray:
    """Any PIL image as uint8 [size, size, 3]: RGB, upright, centre-cropped, resized.

    At most one full-size copy is made besides the decoded image (the white background an alpha
    image is pasted on): cropping is the resize's box, not a copy."""
    if img.getexif().get(EXIF_ORIENTATION, 1) != 1:  # phone photos store their rotation in EXIF
        img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I"):  # 16-bit grey: scale to 8 bits (convert() would clip)
        grey = np.asarray(img, dtype=np.float32) / 257
        img = Image.fromarray(np.clip(grey.round(), 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        img = Image.new("RGB", rgba.size, (255, 255, 255))  # transparency over white
        img.paste(rgba, mask=rgba.getchannel("A"))
    elif img.mode != "RGB":
        img = img.convert("RGB")
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    if (w, h) != (size, size):
        img = img.resize((size, size), Image.Resampling.LANCZOS, box=(left, top, left + side, top + side))
    return np.asarray(img, dtype=np.uint8)
