"""Reading an image a user hands us, from a file or from bytes, without trusting it.

A compressed file can declare a huge picture (a 12000×12000 PNG is 420 KB and decodes to 432 MB),
and Pillow only warns below its own bomb limit. `open_image` reads the declared size from the
header and refuses anything over `max_pixels` before a single pixel is decoded; every entry point
(bring-your-own folders, the CLI, `Pipeline`, the HTTP server) goes through it.

Images are converted, not rejected, when the fix is unambiguous: grayscale (8 or 16 bit), palette
and CMYK images become RGB; EXIF rotation is applied; transparency is composited over white; a
non-square image is centre-cropped to a square; any other size is resized (Lanczos) to the
configured side.
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from smalto.errors import SmaltoError

# 4096×4096: a 16-megapixel photo fits; reading one takes at most ~140 MB (measured for RGBA,
# the worst case; docs/safety.md), and the model sees 32×32 of it anyway.
MAX_PIXELS = 4096 * 4096
EXIF_ORIENTATION = 0x0112
# Pillow warns from 89 MP and refuses from 179 MP; smalto refuses (by default) long before, so its
# warning would only repeat the error that follows it.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageTooLarge(SmaltoError):
    def __init__(self, name: str, width: int, height: int, limit: int):
        super().__init__(f"{name}: the image is {width}×{height} = {width * height:,} pixels, over the limit of "
                         f"{limit:,} (shrink it, or raise the limit with --max-image-pixels)")
        self.width, self.height, self.limit = width, height, limit


def check_size(img: Image.Image, max_pixels: int | None, name: str) -> None:
    """Refuse an image whose declared size is over `max_pixels` (None: no limit)."""
    w, h = img.size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageTooLarge(name, w, h, max_pixels)


def load_image(source: str | Path | bytes, size: int, max_pixels: int | None = MAX_PIXELS,
               name: str | None = None) -> np.ndarray:
    """An image file (a path, or its bytes) as uint8 [size, size, 3], converted as the module says.

    The declared size is checked against `max_pixels` before decoding; every problem is a
    SmaltoError that starts with `name` (default: the path, or "image")."""
    name = name or (str(source) if isinstance(source, (str, Path)) else "image")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else Path(source)) as img:
            check_size(img, max_pixels, name)
            if img.format == "JPEG":  # decode at 1/2..1/8 scale when that still leaves >= size
                img.draft("RGB", (size, size))
            return convert_image(img, size)
    except FileNotFoundError:
        raise SmaltoError(f"{name}: image file not found") from None
    except IsADirectoryError:
        raise SmaltoError(f"{name}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise SmaltoError(f"{name}: not an image Pillow can read") from None
    except Image.DecompressionBombError as e:
        raise SmaltoError(f"{name}: image too large to open safely ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as e:  # truncated or corrupt data
        raise SmaltoError(f"{name}: corrupt image ({e})") from None


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
