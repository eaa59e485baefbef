"""A second reading of a ShapesWorld picture, independent of the verifier, to check the verifier.

ShapesEval scores drawings with `smalto.verify.scene` (colour coverage fitted against the
renderer's own templates). Its errors on decoded model output would go unseen if it were only
ever checked against itself, so this reader gets there another way and ShapesEval reports how
often the two agree on the model's drawings (`agreement`):

1. each pixel takes the nearest palette colour, or the background when it is nearer to that or
   far from every colour (no coverage, no blending model);
2. each 8-connected region of one colour larger than a few pixels is one object;
3. its shape comes from its bounding box alone: how much of the box it fills (a square all of
   it, a circle pi/4, a diamond half) and where in the box its mass sits (an apex-up triangle's
   below the middle, every other shape's at it);
4. its size from the box's longer side against the cell, its cell from the box's centre.

It knows nothing the verifier knows beyond the palette, the grid and the size ratios.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from smalto.data.shapes import BACKGROUND, GRID, PALETTE, Obj, Scene, ShapesConfig

FAR = 110.0  # RGB distance beyond which a pixel is no colour's
SPECK = 4  # regions of fewer pixels are noise


def read(image: np.ndarray, cfg: ShapesConfig | None = None) -> Scene:
    """The scene graph this reader sees in uint8 pixels [H, W, 3]."""
    cfg = cfg or ShapesConfig(image_size=image.shape[0])
    colours = np.asarray([BACKGROUND] + [PALETTE[c] for c in cfg.colors], np.float32)
    distance = np.linalg.norm(image.astype(np.float32)[:, :, None, :] - colours, axis=-1)  # [H, W, 1 + C]
    label = distance.argmin(-1)
    label[distance.min(-1) > FAR] = 0
    cell = image.shape[0] / GRID
    (small, s_ratio), (large, l_ratio) = cfg.sizes[0], cfg.sizes[-1]
    objects = []
    for k, color in enumerate(cfg.colors, start=1):
        regions, count = ndimage.label(label == k, structure=np.ones((3, 3)))
        for r in range(1, count + 1):
            ys, xs = np.nonzero(regions == r)
            if len(ys) < SPECK:
                continue
            h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
            fill = len(ys) / (h * w)
            low = (ys.mean() - ys.min()) / max(h - 1, 1)  # where the mass sits, 0 top .. 1 bottom
            if fill > 0.9:
                shape = "square"
            elif low > 0.55:  # apex up: most of the mass in the lower half
                shape = "triangle"
            else:
                shape = "circle" if fill > 0.64 or "diamond" not in cfg.shapes else "diamond"
            size = large if max(h, w) / cell > (s_ratio + l_ratio) / 2 else small
            row = min(int((ys.min() + ys.max() + 1) / 2 / cell), GRID - 1)
            col = min(int((xs.min() + xs.max() + 1) / 2 / cell), GRID - 1)
            objects.append(Obj(row, col, shape, color, size))
    return Scene(tuple(objects))
