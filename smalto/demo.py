"""`make demo`: what the shipped default can do, as a gallery (PNG grid + HTML) and a summary.

For now that is ShapesWorld and the image tokenizer: scenes with their captions and questions,
their 8x8 code grids, the reconstructions, and what the verifier reads back from them.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
from PIL import Image

from smalto import atomic
from smalto.data import ShapesConfig, ShapesWorld, parse_image, scene_diff
from smalto.plots import image_grid, save_png
from smalto.tokenizers import load_tokenizers
from smalto.tokenizers.evaluate import evaluate_image_tokenizer


def _img_tag(image: np.ndarray, scale: int = 4) -> str:
    buf = io.BytesIO()
    Image.fromarray(image.repeat(scale, 0).repeat(scale, 1)).save(buf, format="PNG")
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}" alt="">'


def run_demo(out: str | Path, n: int = 8, eval_images: int = 500) -> None:
    tok = load_tokenizers()
    world = ShapesWorld(ShapesConfig(image_size=tok.image.cfg.image_size), seed=2024, split="all")
    samples = [world[i] for i in range(n)]
    images = np.stack([s.image for s in samples])
    codes = tok.image.encode(images)
    recon = tok.image.decode(codes)

    cards = []
    for s, c, r in zip(samples, codes, recon):
        diff = scene_diff(s.scene, parse_image(r, world.cfg))
        verdict = "verifier: reconstruction matches the scene" if not diff else "verifier: " + "; ".join(diff)
        qa = "".join(f"<li>{html.escape(p['q'])} <b>{html.escape(p['a'])}</b></li>" for p in s.qa[:4])
        tokens = len(tok.text.encode(s.captions[0]))
        cards.append(f"""<div class="card">{_img_tag(s.image)}{_img_tag(r)}
<p class="caption">{html.escape(s.captions[0])}</p>
<p class="meta">{tokens} text tokens + {c.numel()} image codes ({c.shape[0]}&times;{c.shape[1]}),
first row: {' '.join(str(int(x)) for x in c[0])}</p>
<p class="{'ok' if not diff else 'bad'}">{html.escape(verdict)}</p><ul>{qa}</ul></div>""")

    eval_set = ShapesWorld(world.cfg, seed=7, split="all").images(0, eval_images)
    metrics, _ = evaluate_image_tokenizer(tok.image, eval_set, True, world.cfg)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>smalto demo</title><style>
body{{font-family:system-ui,sans-serif;margin:2rem;background:#fafafa;color:#222}}
.grid{{display:grid;grid-template-columns:repeat(auto-fill,minmax(290px,1fr));gap:1rem}}
.card{{background:#fff;border:1px solid #ddd;border-radius:8px;padding:.8rem}}
.card img{{image-rendering:pixelated;margin-right:.5rem}} .caption{{font-weight:600}}
.meta{{color:#666;font-size:.85rem}} .ok{{color:#17803d}} .bad{{color:#b42318}}
pre{{background:#fff;border:1px solid #ddd;padding:1rem;border-radius:8px}}</style></head><body>
<h1>smalto demo</h1><p>ShapesWorld scenes (left) and their reconstruction from 64 discrete image
codes by the shipped image tokenizer (right), with the canonical caption and sample questions.</p>
<div class="grid">{''.join(cards)}</div>
<h2>Image tokenizer on {eval_images} scenes</h2><pre>{html.escape(metrics.table())}</pre></body></html>"""

    with atomic.directory(out, overwrite=True) as tmp:
        save_png(tmp / "gallery.png", image_grid([images, recon]))
        atomic.write_text(tmp / "index.html", page)
    print(f"image tokenizer ({tok.image.cfg.quantizer}, {tok.image.codebook_size} codes) on {eval_images} "
          f"ShapesWorld scenes:")
    print(metrics.table())
    print(f"gallery: {Path(out) / 'gallery.png'} and {Path(out) / 'index.html'}")
