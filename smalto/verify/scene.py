"""The verifier: pixels -> scene graph, for ShapesWorld images.

It judges reconstructions and generated images, so it must tolerate what a decoder does to
crisp pixels (mild blur, colour noise) while refusing what is not a ShapesWorld object.

How it reads an image:
1. Colour. Every palette colour c defines a line from the background to c; a pixel's
   *coverage* alpha_c is its projection onto that line and its residual is the distance to it.
   A blurred edge is a blend of object and background, so it lies on the line with a
   fractional alpha: coverage survives blur, and its sum over an object (the mass) is
   unchanged by it.
2. Objects. Pixels with alpha >= 0.5 and a small residual are labelled with their colour; each
   4-connected component of one colour is an object candidate. Specks below a third of the
   smallest object's area are ignored as noise.
3. Shape and size. The candidate's coverage is compared (L1) with every (shape, size)
   template, drawn by the renderer itself at quarter-pixel centres within a pixel of where the
   centroid puts it, and blurred to a few widths; the best fit wins.
   A fit error above `max_fit_error`, or a faint object (a ghost at half coverage), means
   "not a shape I know" and yields shape "unknown".
4. Cell. The fitted template's centre decides the cell of the 3x3 grid.

What it cannot judge: colours outside the palette (they are ignored, and counted in
`unexplained`), objects that touch or overlap (one blob, one fit), objects heavily blurred
(past about a 1-pixel Gaussian the small sizes become ambiguous), texture, and anything about
the image that is not in the scene graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from smalto.data.shapes import BACKGROUND, GRID, PALETTE, Obj, Scene, ShapesConfig, shape_mask

RESIDUAL_LIMIT = 60.0  # RGB distance from a colour's line still counted as that colour
BLUR_WIDTHS = (0.0, 0.5, 0.9)  # Gaussian sigmas tried for each template


@dataclass(frozen=True)
class Detection:
    obj: Obj
    mass: float  # summed coverage, in pixels
    fit_error: float  # L1(coverage - template) / template area; lower is better
    centre: tuple[float, float] = (0.0, 0.0)  # the fitted template's centre (x, y), in pixels


@dataclass(frozen=True)
class Parse:
    scene: Scene
    detections: tuple[Detection, ...]
    unexplained: float  # share of pixels that are neither background nor part of an object


def coverage(image: np.ndarray, cfg: ShapesConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-colour coverage alpha [H, W, C] in [0, 1] and residual distance [H, W, C]."""
    x = image.astype(np.float32) - np.asarray(BACKGROUND, np.float32)
    d = np.asarray([PALETTE[c] for c in cfg.colors], np.float32) - np.asarray(BACKGROUND, np.float32)
    alpha = np.clip(x @ d.T / (d * d).sum(1), 0.0, 1.0)
    residual = np.linalg.norm(x[..., None, :] - alpha[..., None] * d, axis=-1)
    return alpha, residual


STEP = 0.25  # template centres are tried on a quarter-pixel grid ...
SEARCH = 1.0  # ... up to this far (in pixels) from where the centroid puts them


@dataclass(frozen=True)
class _Bank:
    """Every (shape, size, blur) template at every quarter-pixel centre in a small window."""

    window: int
    hypotheses: tuple[tuple[str, str], ...]
    offsets: np.ndarray  # [K, 2] centroid minus box centre, per hypothesis
    templates: np.ndarray  # [K, B, P, P, window, window] coverage; B blurs, P x P centres
    areas: np.ndarray  # [K]
    centres: np.ndarray  # [P] centre coordinates inside the window, per axis


@lru_cache(maxsize=8)
def _bank(cfg: ShapesConfig) -> _Bank:
    largest = max(cfg.side(z) for z in cfg.size_names)
    window = int(np.ceil(largest)) + 10
    reach = largest / 6 + SEARCH + 1  # the triangle's centroid sits side/6 below its centre
    centres = window / 2 + np.arange(-reach, reach + STEP / 2, STEP)
    hypotheses = tuple((s, z) for s in cfg.shapes for z in cfg.size_names)
    templates = np.zeros((len(hypotheses), len(BLUR_WIDTHS), len(centres), len(centres), window, window),
                         np.float32)
    offsets, areas = [], []
    for k, (shape, size) in enumerate(hypotheses):
        side = cfg.side(size)
        fine = shape_mask(shape, 32.0, 32.0, side * 4, 64, 64)
        ys, xs = np.nonzero(fine)
        offsets.append(((xs.mean() + 0.5 - 32) / 4, (ys.mean() + 0.5 - 32) / 4))
        areas.append(fine.sum() / 16)
        for i, ty in enumerate(centres):
            for j, tx in enumerate(centres):
                t = shape_mask(shape, tx, ty, side, window, window).astype(np.float32)
                for b, sigma in enumerate(BLUR_WIDTHS):
                    templates[k, b, i, j] = ndimage.gaussian_filter(t, sigma) if sigma else t
    return _Bank(window, hypotheses, np.asarray(offsets), templates, np.asarray(areas), centres)


def _fit(cov: np.ndarray, cx: float, cy: float, cfg: ShapesConfig) -> tuple[str, str, float, float, float]:
    """Best (shape, size, error, centre x, centre y) for one object's coverage map [H, W]."""
    bank = _bank(cfg)
    w = bank.window
    x0, y0 = int(round(cx - w / 2)), int(round(cy - w / 2))
    padded = np.pad(cov, w)
    patch = padded[y0 + w:y0 + 2 * w, x0 + w:x0 + 2 * w]
    best = ("unknown", cfg.size_names[0], np.inf, cx, cy, 0)
    for k, (shape, size) in enumerate(bank.hypotheses):
        ox, oy = bank.offsets[k]
        near_y = np.abs(bank.centres - (cy - oy - y0)) <= SEARCH
        near_x = np.abs(bank.centres - (cx - ox - x0)) <= SEARCH
        candidates = bank.templates[k][:, near_y][:, :, near_x]  # [B, py, px, w, w]
        errors = np.abs(candidates - patch).sum((-1, -2))
        b, i, j = np.unravel_index(errors.argmin(), errors.shape)
        if errors[b, i, j] < best[2]:
            best = (shape, size, float(errors[b, i, j]),
                    x0 + bank.centres[near_x][j], y0 + bank.centres[near_y][i], k)
    shape, size, error, tx, ty, k = best
    return shape, size, error / bank.areas[k], tx, ty


def inspect(image: np.ndarray, cfg: ShapesConfig | None = None, max_fit_error: float = 0.6) -> Parse:
    """Parse an RGB image (uint8 or float in 0..255, [H, W, 3]) into a scene graph."""
    cfg = cfg or ShapesConfig()
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an [H, W, 3] image, got shape {image.shape}")
    alpha, residual = coverage(image, cfg)
    fits = residual < RESIDUAL_LIMIT
    score = np.where(fits & (alpha >= 0.5), residual, np.inf)
    label = np.where(np.isfinite(score.min(-1)), score.argmin(-1), -1)
    min_mass = min(shape_mask(s, 32, 32, cfg.side(z), 64, 64).sum()
                   for s in cfg.shapes for z in cfg.size_names) / 3

    explained = (np.abs(image.astype(np.float32) - BACKGROUND).max(-1) < RESIDUAL_LIMIT / 2)
    detections = []
    ys, xs = np.mgrid[0:image.shape[0], 0:image.shape[1]] + 0.5
    for c, color in enumerate(cfg.colors):
        components, n = ndimage.label(label == c)
        for k in range(1, n + 1):
            core = components == k
            # The blurred rim lies just outside the core; claim it unless another colour owns it.
            region = ndimage.binary_dilation(core, iterations=2) & ((label == c) | (label == -1))
            region &= (components == k) | (components == 0)
            cov = np.where(region & fits[..., c], alpha[..., c], 0.0)
            mass = float(cov.sum())
            if mass < min_mass:
                continue
            explained |= region & fits[..., c]
            cx, cy = float((cov * xs).sum() / mass), float((cov * ys).sum() / mass)
            shape, size, err, tx, ty = _fit(cov, cx, cy, cfg)
            faint = np.percentile(alpha[..., c][core], 90) < 0.8  # a ghost, not a painted shape
            if err > max_fit_error or faint:
                shape = "unknown"
            row = min(max(int(ty // cfg.cell), 0), GRID - 1)
            col = min(max(int(tx // cfg.cell), 0), GRID - 1)
            detections.append(Detection(Obj(row, col, shape, color, size), mass, err, (float(tx), float(ty))))
    scene = Scene(tuple(d.obj for d in detections))
    return Parse(scene, tuple(detections), float(1.0 - explained.mean()))


def parse_image(image: np.ndarray, cfg: ShapesConfig | None = None) -> Scene:
    return inspect(image, cfg).scene


def scene_diff(expected: Scene, got: Scene) -> list[str]:
    """Human-readable differences; empty when the scenes match exactly."""
    missing = [o for o in expected.objects if o not in got.objects]
    extra = [o for o in got.objects if o not in expected.objects]
    return ([f"missing {o.phrase()} at the {o.position}" for o in missing]
            + [f"unexpected {o.phrase()} at the {o.position}" for o in extra])
