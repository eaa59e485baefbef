"""ShapesEval's video section: clips of ShapesWorld in motion, judged by program.

- caption: the clip parsed from the generated caption (`parse_clip_caption`) must be the truth:
  every object, where it starts, its direction and speed (exact);
- QA: exact answers per question type (direction, start, end, moves, which, how many, passes);
- draw: a clip drawn from a canonical caption, read back by the clip verifier, must be the clip
  the caption describes (faithful);
- continue: given a clip's frames 0-4 (two latent frames, so velocities are known), the
  continuation must be the true clip ("exact", the headline) and each object must move at its true
  velocity ("motion", per object); given only frame 0, it must be physically consistent (every
  object keeps one velocity and bounces off the border, nothing appears or vanishes). Beside
  each, the same score of a copy: the given frames with the last one held still, which passes
  "consistent" always, so that row says little on its own;
- the video tokenizer's round trip of the same clips: the ceiling of drawing and continuing.
"""

from __future__ import annotations

import numpy as np

from smalto.data.motion import Clip, MotionConfig, MotionWorld, clip_captions, parse_clip_caption
from smalto.pipeline import Pipeline
from smalto.verify.motion import ClipParse, parse_clip, recover


def pct(values: list[bool]) -> float:
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
        for s, text in zip(chunk, pipe.caption_batch(clips)):
            captions.append(parse_clip_caption(text, frames) == s.clip)
        for pair, answer in zip(asked, pipe.ask_batch(clips, [p["q"] for p in asked])):
            qa.setdefault(pair["type"], []).append(answer == pair["a"])
    report = {"caption_exact": pct(captions), "qa_overall": pct([x for v in qa.values() for x in v]),
              **{f"qa_{kind}": pct(v) for kind, v in sorted(qa.items())}}
    faithful, ceiling = [], []
    scores: dict[str, list[bool]] = {k: [] for k in ("consistent", "motion", "exact")}
    copies: dict[str, list[bool]] = {k: [] for k in scores}
    sampling = pipe.draw_sampling(seed)
    temporal = pipe.tokenizers.video.cfg.temporal
    for i in range(0, drawings, batch):
        chunk = samples[i:min(i + batch, drawings)]
        clips = [s.frames for s in chunk]
        drawn = pipe.draw([clip_captions(s.clip)[0] for s in chunk], sampling, "video")
        faithful += [parse_clip(c, world.cfg).clip == s.clip for s, c in zip(chunk, drawn)]
        for given, judged in ((1, ("consistent",)), (2, ("motion", "exact"))):
            shown = 1 + (given - 1) * temporal  # pixel frames in `given` latent frames
            for s, c in zip(chunk, pipe.continue_clips(clips, given=given)):
                copy = np.concatenate([s.frames[:shown], np.repeat(s.frames[shown - 1:shown], frames - shown, 0)])
                for out, made in ((scores, c), (copies, copy)):
                    verdict = continuation(s.clip, parse_clip(made, world.cfg))
                    for key in judged:
                        out[key] += verdict[key]
        round_trip = pipe.tokenizers.video.decode(pipe.clip_codes(clips))[:, :frames]
        ceiling += [parse_clip(c, world.cfg).clip == s.clip for s, c in zip(chunk, round_trip)]
    return report | {"draw_faithful": pct(faithful), "tokenizer_round_trip": pct(ceiling),
                     **{f"continue_{k}": pct(v) for k, v in scores.items()},
                     **{f"copy_{k}": pct(v) for k, v in copies.items()}}


def continuation(truth: Clip, got: ClipParse) -> dict[str, list[bool]]:
    """A continued clip against the true one: "consistent" (it is a ShapesWorld clip, and its first
    frame is the truth's: a still copy passes), "motion" (per true object, the velocity its track
    shows is the true one: a still copy passes only for objects that stand still) and "exact"."""
    motion = []
    for m in truth.movers:
        track = got.tracks.get((m.shape, m.color, m.size))
        seen = recover((m.shape, m.color, m.size), track) if track and None not in track else None
        motion.append(seen is not None and (seen.x, seen.y, seen.dx, seen.dy) == (m.x, m.y, m.dx, m.dy))
    return {"consistent": [got.clip is not None and got.clip.scene(0) == truth.scene(0)], "motion": motion,
            "exact": [got.clip == truth]}


# The copy baseline (the given frames, the last held still) beside each continuation row.
VIDEO_ROWS = ("caption_exact", "qa_overall", "draw_faithful", "continue_exact", "continue_motion",
              "continue_consistent", "tokenizer_round_trip")
VIDEO_BASELINES = {"continue_exact": "copy_exact", "continue_motion": "copy_motion",
                   "continue_consistent": "copy_consistent"}
