"""Writes the example inputs the README's commands use (run from the repository root):

    python examples/make_examples.py

two-objects.png and three-objects.png: ShapesWorld scenes the shipped model never saw in its recorded
training streams (`smalto.eval.scenes`, development seed); scene.png: one circle (every one of the
270 one-object scenes was in training, so none is unseen); clip.gif: a clip of ShapesWorld in motion
(7 frames). All at the model's 32×32, so nothing is lost to resizing. two-objects.wav: that scene's
sound (`smalto.data.sounds`); spoken.wav: its caption said by espeak-ng in a voice the recogniser
never heard.
"""

from pathlib import Path

import smalto
from smalto.data import ShapesConfig, ShapesWorld
from smalto.data.sounds import SoundConfig, render_sound, write_wav
from smalto.data.speech import VOICES, speak
from smalto.data.video import save_clip
from smalto.eval.scenes import scene_kinds
from smalto.eval.video_eval import motion_world
from smalto.plots import save_png

HERE = Path(__file__).parent
DEV_SEED = 40_000  # (smalto.eval.shapes_eval.DEV_SEED: never the evaluation's)


def main() -> None:
    pipe = smalto.load()
    world = scene_kinds(ShapesConfig(image_size=pipe.image_size), DEV_SEED, pipe.streams, ("unseen",)).kinds["unseen"]
    names = {2: "two-objects.png", 3: "three-objects.png"}
    for i in range(len(world)):
        sample = world[i]
        if (name := names.pop(len(sample.scene.objects), None)) is not None:
            save_png(HERE / name, sample.image)
            print(f"{name}: {sample.captions[0]}")
            if name == "two-objects.png":
                sound = SoundConfig()
                write_wav(HERE / "two-objects.wav", render_sound(sample.scene, sound), sound.sample_rate)
                write_wav(HERE / "spoken.wav", speak(sample.captions[0], VOICES["heldout"][0]), sound.sample_rate)
                print(f"two-objects.wav, spoken.wav: {sample.captions[0]}")
        if not names:
            break
    one = ShapesWorld(ShapesConfig(image_size=pipe.image_size), DEV_SEED)
    circle = next(s for s in map(one.__getitem__, range(10_000))
                  if len(s.scene.objects) == 1 and s.scene.objects[0].shape == "circle")
    save_png(HERE / "scene.png", circle.image)
    print(f"scene.png: {circle.captions[0]}")
    clips = motion_world(pipe, DEV_SEED, "train")  # (the README asks which way its red circle moves)
    clip = next(c for c in map(clips.__getitem__, range(10_000))
                if c.captions[0].startswith("a small red circle moves") and " and " not in c.captions[0])
    save_clip(clip.frames, HERE / "clip.gif")
    print(f"clip.gif: {clip.captions[0]}")


if __name__ == "__main__":
    main()
