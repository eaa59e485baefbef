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


def eval_video(pipe: Pipeline, world: MotionWorld, n: int, drawings: int, seed: int) -> dict:
    """The video section for one split (`world`): n clips to read, `drawings` to draw and continue."""
    samples = [world[i] for i in range(n)]
    frames = world.cfg.frames
    captions, qa = [], {}
    for i, s in enumerate(samples):
        captions.append(parse_clip_caption(pipe.caption_clip(s.frames), frames) == s.clip)
        pair = s.qa[int(np.random.default_rng([seed, i]).integers(len(s.qa)))]
        qa.setdefault(pair["type"], []).append(pipe.ask_clip(s.frames, pair["q"]) == pair["a"])
    report = {"caption_exact": _pct(captions), "qa_overall": _pct([x for v in qa.values() for x in v]),
              **{f"qa_{kind}": _pct(v) for kind, v in sorted(qa.items())}}
    drawn = samples[:drawings]
    faithful = [parse_clip(pipe.generate_clip(clip_captions(s.clip)[0], seed=seed)[0], world.cfg).clip == s.clip
                for s in drawn]
    consistent, exact, ceiling = [], [], []
    for s in drawn:
        first = pipe.continue_clip(s.frames, given=1)[0]
        parsed = parse_clip(first, world.cfg)
        consistent.append(parsed.clip is not None and parsed.clip.scene(0) == s.clip.scene(0))
        exact.append(parse_clip(pipe.continue_clip(s.frames, given=2)[0], world.cfg).clip == s.clip)
    codes = pipe.clip_codes([s.frames for s in drawn])
    for s, clip in zip(drawn, pipe.tokenizers.video.decode(codes)[:, :frames]):
        ceiling.append(parse_clip(clip, world.cfg).clip == s.clip)
    return report | {"draw_faithful": _pct(faithful), "continue_consistent": _pct(consistent),
                     "continue_exact": _pct(exact), "tokenizer_round_trip": _pct(ceiling)}


VIDEO_ROWS = ("caption_exact", "qa_overall", "draw_faithful", "continue_consistent", "continue_exact",
              "tokenizer_round_trip")
