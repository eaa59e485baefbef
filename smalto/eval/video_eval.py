"""ShapesEval's video section: clips of ShapesWorld in motion, judged by program.

- caption: the clip parsed from the generated caption (`parse_clip_caption`) must be the truth:
  every object, where it starts, its direction and speed (exact);
- QA: exact answers per question type (direction, start, end, moves, which, how many, passes);
- draw: a clip drawn from a canonical caption, read back by the clip verifier, must be the clip
  the caption describes (faithful);
- continue: given a clip's first frame, the continuation must be physically consistent (every
  object of the first frame keeps one velocity and bounces off the border, nothing appears or
  vanishes); given its first latent frame after that too (frames 0-4, so velocities are known),
  it must be the true clip (exact);
- the video tokenizer's round trip of the same clips: the ceiling of drawing and continuing.
"""

from __future__ import annotations

import numpy as np

from smalto.data.motion import MotionConfig, MotionWorld, clip_captions, parse_clip_caption
from smalto.pipeline import Pipeline
from smalto.verify.motion import parse_clip

def _pct(values: list[bool]) -> float:
    return round(100.0 * float(np.mean(values)), 1) if values else float("nan")


def motion_world(pipe: Pipeline, seed: int, split: str) -> MotionWorld:
    world = pipe.world or MotionConfig().world
    return MotionWorld(MotionConfig(pipe.clip_frames, world), seed, split)


def eval_video(pipe: Pipeline, world: MotionWorld, n: int, drawings: int, seed: int, batch: int = 16) -> dict:
    """The video section for one split (`world`): n clips to read, `drawings` to draw and continue."""
    samples = [world[i] for i in range(max(n, drawings))]
    frames = world.cfg.frames
    rng = np.random.default_rng(seed)
    pairs = [s.qa[int(rng.integers(len(s.qa)))] for s in samples]
    captions, qa = [], {}
    for i in range(0, n, batch):
        chunk, asked = samples[i:min(i + batch, n)], pairs[i:min(i + batch, n)]
        clips = [s.frames for s in chunk]
        for s, text in zip(chunk, pipe.caption_clips(clips)):
            captions.append(parse_clip_caption(text, frames) == s.clip)
        for pair, answer in zip(asked, pipe.ask_clips(clips, [p["q"] for p in asked])):
            qa.setdefault(pair["type"], []).append(answer == pair["a"])
    report = {"caption_exact": _pct(captions), "qa_overall": _pct([x for v in qa.values() for x in v]),
              **{f"qa_{kind}": _pct(v) for kind, v in sorted(qa.items())}}
    faithful, consistent, exact, ceiling = [], [], [], []
    sampling = pipe.draw_sampling(seed)
    for i in range(0, drawings, batch):
        chunk = samples[i:min(i + batch, drawings)]
        clips = [s.frames for s in chunk]
        drawn = pipe.draw([clip_captions(s.clip)[0] for s in chunk], sampling, "video")
        faithful += [parse_clip(c, world.cfg).clip == s.clip for s, c in zip(chunk, drawn)]
        for s, c in zip(chunk, pipe.continue_clips(clips, given=1)):
            parsed = parse_clip(c, world.cfg).clip
            consistent.append(parsed is not None and parsed.scene(0) == s.clip.scene(0))
        exact += [parse_clip(c, world.cfg).clip == s.clip for s, c in zip(chunk, pipe.continue_clips(clips, given=2))]
        round_trip = pipe.tokenizers.video.decode(pipe.clip_codes(clips))[:, :frames]
        ceiling += [parse_clip(c, world.cfg).clip == s.clip for s, c in zip(chunk, round_trip)]
    return report | {"draw_faithful": _pct(faithful), "continue_consistent": _pct(consistent),
                     "continue_exact": _pct(exact), "tokenizer_round_trip": _pct(ceiling)}


VIDEO_ROWS = ("caption_exact", "qa_overall", "draw_faithful", "continue_consistent", "continue_exact",
              "tokenizer_round_trip")
