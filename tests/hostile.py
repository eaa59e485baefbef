"""Hostile files, made without holding their pixels: the tests and bench/hostile_inputs.py feed
them to every reader. Each declares far more than it holds (a 53-byte GIF says 20000×20000)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def bomb_png(width: int, height: int, rgba: bool = False) -> bytes:
    """A valid, fully decodable PNG of any declared size (1-bit grey, or 8-bit RGBA), made without
    ever holding its pixels: 12000×12000 grey is 18 KB here and 432 MB once decoded to RGB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (4 * width if rgba else (width + 7) // 8))  # filter byte + pixels
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, 8 if rgba else 1, 6 if rgba else 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def gif(frames: int = 2, comment: bytes | None = None, duration: int = 100, side: int = 32) -> bytearray:
    """A real animated GIF: `frames` frames of one grey each, `duration` ms apart."""
    images = [Image.fromarray(np.full((side, side, 3), (30 * k) % 256, np.uint8)) for k in range(frames)]
    buf = io.BytesIO()
    extra = {"comment": comment} if comment else {}
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=duration, **extra)
    return bytearray(buf.getvalue())


def _descriptors(data: bytearray) -> list[int]:
    """Where each frame's image descriptor (0x2C, left, top, width, height) starts: after its
    graphic control extension (0x21 0xF9, 8 bytes)."""
    return [i for i in range(8, len(data)) if data[i] == 0x2C and data[i - 8:i - 6] == b"\x21\xf9"]


def huge_gif(width: int, height: int) -> bytes:
    """One frame whose screen and image both declare width × height."""
    data = gif(1, side=2)
    data[6:10] = struct.pack("<2H", width, height)
    first = _descriptors(data)[0]
    data[first + 5:first + 9] = struct.pack("<2H", width, height)
    return bytes(data)


def frame_bomb_gif(side: int = 12000) -> bytes:
    """A 32×32 screen whose second frame declares itself side × side."""
    data = gif(2)
    second = _descriptors(data)[1]
    data[second + 5:second + 9] = struct.pack("<2H", side, side)
    return bytes(data)


def wide_screen_gif(frames: int = 64, side: int = 4096) -> bytes:
    """`frames` frames of 2×2 on a side × side screen: each within a per-picture limit, each
    composited at full screen size (64 × 4096² is 1 G pixels to decode, from 2.5 KB)."""
    data = gif(frames, side=2)
    data[6:10] = struct.pack("<2H", side, side)
    return bytes(data)


def huge_webp(width: int = 16383, height: int = 16383) -> bytes:
    """A lossless WebP header declaring width × height (16383 is WebP's largest side), no pixels."""
    vp8l = b"\x2f" + struct.pack("<I", (width - 1) | (height - 1) << 14) + bytes(16)
    chunk = b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def corrupt_gif() -> bytes:
    """A real clip with its first frame's pixel data scrambled and the file cut short."""
    data = gif(3)
    first = _descriptors(data)[0]
    data[first + 11:first + 40] = bytes(range(200, 229))
    return bytes(data[:_descriptors(data)[1]])
