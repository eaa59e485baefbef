"""`make demo`: the shipped default model reads and draws; a gallery and the evaluation summary.

Writes OUT/gallery.png (prompts -> images, one row per prompt) and OUT/index.html (drawings,
captions and answers for scenes it never saw, each checked by the verifier or against the truth,
and the ShapesEval table), and prints the table.
"""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path

import numpy as np

from smalto import atomic
from smalto.data import Scene, ShapesConfig, parse_caption
from smalto.verify.scene import parse_image, scene_diff
from smalto.data.motion import clip_captions, parse_clip_caption
from smalto.data.video import clip_bytes
from smalto.eval.conversations import converse, held_out_set
from smalto.eval.scenes import scene_kinds
from smalto.eval.shapes_eval import QUICK_EVAL, EvalConfig, evaluate, summary_table
from smalto.eval.video_eval import motion_world
from smalto.pipeline import load
from smalto.plots import image_grid, png_bytes
from smalto.progress import bar as progress_bar
from smalto.verify.judges import judge_turn
from smalto.verify.motion import parse_clip

# A third of `smalto eval`'s items, unseen and held-out scenes: the demo shows the model, `smalto eval` measures it.
DEMO_EVAL = EvalConfig(captions=64, questions=128, drawings=16, premises=64, relations=16, conversations=32,
                       hallucination=64, clips=32, clip_drawings=8, sounds=32, sound_drawings=8)

PROMPTS = [
    "a large red circle at the center",
    "a small blue square at the top left",
    "a large yellow triangle at the bottom right",
    "a small purple circle at the top right and a large green triangle at the bottom left",
    "a large cyan square left of a small red circle",
    "three objects: a small yellow circle in the top left, a large blue triangle in the center and "
    "a small red square in the bottom right",
    "a large red triangle at the top middle",  # a held-out composition: never seen in training
]


def _img(image: np.ndarray, scale: int = 4) -> str:
    data = base64.b64encode(png_bytes(image.repeat(scale, 0).repeat(scale, 1))).decode()
    return f'<img src="data:image/png;base64,{data}" alt="">'


def _gif(frames: np.ndarray, scale: int = 4) -> str:
    data = base64.b64encode(clip_bytes(frames, scale=scale)).decode()
    return f'<img src="data:image/gif;base64,{data}" alt="">'


def _clips(pipe, steps) -> str:
    """Clips drawn from captions and continued from their first frame, judged by the clip verifier,
    and clips it never saw captioned and asked about (a model trained on clips)."""
    world = motion_world(pipe, 2024, "train")
    cards = []
    for i in range(3):
        s = world[i]
        caption = clip_captions(s.clip)[0]
        drawn = pipe.generate(caption, modality="video", seed=0)[0]
        following = pipe.continue_clip(s.frames, given=1)[0]
        parsed = parse_clip(following, world.cfg).clip
        said = pipe.caption(s.frames)
        pair = s.qa[1]
        answer = pipe.ask(s.frames, pair["q"])
        cards.append(f'<div class="card"><p class="caption">{html.escape(caption)}</p>'
                     f'<span>{_gif(drawn)}{_mark(parse_clip(drawn, world.cfg).clip == s.clip)}</span>'
                     f'<p>the clip, then continued from its first frame '
                     f'{_mark(parsed is not None and parsed.scene(0) == s.clip.scene(0))}</p>'
                     f'<span>{_gif(s.frames)}</span><span>{_gif(following)}</span>'
                     f'<p>{html.escape(said)} {_mark(parse_clip_caption(said, s.clip.frames) == s.clip)}</p>'
                     f'<ul><li>{html.escape(pair["q"])} <b>{html.escape(answer)}</b> {_mark(answer == pair["a"])}'
                     f'</li></ul></div>')
        steps.update()
    return f'<h2>Clips (drawn, continued, described)</h2><div class="grid">{"".join(cards)}</div>'


def _mark(ok: bool) -> str:
    return '<span class="ok">&#10003;</span>' if ok else '<span class="bad">&#10007;</span>'


def _conversations(pipe, world) -> list[str]:
    """Three conversations of the held-out set (`smalto.eval.conversations`: greetings, thanks,
    requests outside the world, descriptions and questions in phrasings training never used),
    each reply marked by `judge_turn`."""
    talks = held_out_set(world, 12)
    pictured = [any(t.picture for t in turns) for _, turns in talks]
    talks = [t for t, p in zip(talks, pictured) if p][:2] + [t for t, p in zip(talks, pictured) if not p][:1]
    cards = []
    for (sample, turns), replies in zip(talks, converse(pipe, talks)):
        items = "".join(f"<li>{_img(sample.image, 2) if t.picture else ''}{html.escape(t.text)} "
                        f"<b>{html.escape(r)}</b> {_mark(judge_turn(t, r, sample.scene).score == 1.0)}</li>"
                        for t, r in zip(turns, replies))
        cards.append(f'<div class="card"><ul>{items}</ul></div>')
    return cards


def run_demo(out: str | Path, model: str | Path | None = None, samples: int = 4, quick: bool = False) -> dict:
    """The gallery (`out`/index.html, gallery.png) and a ShapesEval table of the model (the shipped
    one when None); quick: the table on `smalto eval --quick`'s items."""
    started = time.perf_counter()
    pipe = load(model)
    cfg = ShapesConfig(image_size=pipe.image_size)

    steps = progress_bar(total=len(PROMPTS) + 6 + 1 + 3 * pipe.reads_clips, desc="demo", unit="step")
    rows, draw_cards = [], []
    for prompt in PROMPTS:
        images = pipe.generate_image(prompt, n=samples, seed=0)
        rows.append(np.stack(images))
        target = parse_caption(prompt)
        verdicts = []
        for im in images:
            got = parse_image(im, cfg)
            verdicts.append(_mark(target is not None and got == target) if target else "")
        draw_cards.append(f'<div class="card"><p class="caption">{html.escape(prompt)}</p>'
                          + "".join(f"<span>{_img(im)}{v}</span>" for im, v in zip(images, verdicts)) + "</div>")
        steps.update()

    # scenes it never saw (`smalto.eval.scenes`: not in its recorded training streams)
    world = scene_kinds(cfg, 2024, pipe.streams, ("unseen",)).kinds["unseen"]
    read_cards = []
    for i in range(6):
        s = world[i]
        caption = pipe.caption(s.image)
        qa = s.qa[1:4]
        answers = pipe.ask_batch([s.image] * len(qa), [p["q"] for p in qa])
        items = "".join(f"<li>{html.escape(p['q'])} <b>{html.escape(a)}</b> {_mark(a == p['a'])}</li>"
                        for p, a in zip(qa, answers))
        diff = scene_diff(s.scene, parse_caption(caption) or Scene(()))
        read_cards.append(f'<div class="card">{_img(s.image)}<p class="caption">{html.escape(caption)} '
                          f'{_mark(not diff)}</p><ul>{items}</ul></div>')
        steps.update()

    talk_cards = _conversations(pipe, world)
    steps.update()
    clips = _clips(pipe, steps) if pipe.reads_clips else ""
    steps.close()

    report = evaluate(pipe, QUICK_EVAL if quick else DEMO_EVAL, kinds=("unseen", "heldout"), progress=True)
    settings = ", ".join(f"{k} {v}" for k, v in pipe.draw_defaults.items())
    table = summary_table(report)
    tok = pipe.tokenizers
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>smalto demo</title><style>
body{{font-family:system-ui,sans-serif;margin:2rem;background:#fafafa;color:#222;max-width:1100px}}
.grid{{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:1rem}}
.card{{background:#fff;border:1px solid #ddd;border-radius:8px;padding:.8rem}}
.card img{{image-rendering:pixelated;margin:.2rem}} .caption{{font-weight:600}}
.ok{{color:#17803d;font-weight:700}} .bad{{color:#b42318;font-weight:700}}
pre{{background:#fff;border:1px solid #ddd;padding:1rem;border-radius:8px;overflow:auto}}</style></head><body>
<h1>smalto demo</h1>
<p>One {pipe.model.num_params() / 1e6:.1f}M-parameter transformer over {pipe.vocab.size} tokens
({tok.text.vocab_size} text, {pipe.vocab.ranges['image'].size} image codes; an image is {pipe.vocab.image_tokens}
codes). Every verdict below is computed: drawings by the verifier, captions by parsing them back into
a scene graph, answers against the truth.</p>
<h2>Text &rarr; image ({html.escape(settings)}, seed 0)</h2><div class="grid">{''.join(draw_cards)}</div>
<h2>Image &rarr; text (scenes it never saw)</h2><div class="grid">{''.join(read_cards)}</div>
<h2>Conversations (phrasings training never used; a picture where it was attached)</h2>
<div class="grid">{''.join(talk_cards)}</div>
{clips}
<h2>ShapesEval</h2><pre>{html.escape(table)}</pre></body></html>"""

    with atomic.directory(out, overwrite=True) as tmp:
        atomic.write_bytes(tmp / "gallery.png", png_bytes(image_grid(rows, labels=PROMPTS)))
        atomic.write_text(tmp / "index.html", page)
    print(table)
    print(f"\ngallery: {Path(out) / 'gallery.png'} (one row per prompt) and {Path(out) / 'index.html'}"
          f"  [{time.perf_counter() - started:.0f} s]")
    return report
