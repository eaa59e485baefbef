"""The tasks a training stream mixes, by name (`--mix caption=0.3 ...`), what a model trained on a
mix can do (recorded in its checkpoint), and the words that ask for the tasks a user can only name:
continuing a clip or a sound, hearing a picture and drawing a sound."""

TASKS = ("caption", "draw", "qa", "think", "chat", "clip_caption", "clip_draw", "clip_qa", "clip_next",
         "sound_caption", "sound_draw", "sound_qa", "picture_to_sound", "sound_to_picture", "sound_next")
PICTURE_TASKS, CLIP_TASKS, SOUND_TASKS = TASKS[:5], TASKS[5:9], TASKS[9:]
CONTINUE = "continue the clip"  # what the user says to have a clip's first frames continued
CONTINUE_SOUND = "continue the sound"  # ... and a sound's first notes (a melody, `data.melodies`)
HEAR_PICTURE = "what does this scene sound like?"  # a picture -> its sound
DRAW_SOUND = "draw what you hear"  # a sound -> its picture
SOUND_OF = "the sound of "  # half of text -> sound prompts start so (the others are the bare caption)
REQUESTS = {("image", "audio"): HEAR_PICTURE, ("audio", "image"): DRAW_SOUND}  # (from, into) -> its words

# Which modality each task teaches a model to read, and to draw.
READS = {"image": ("caption", "qa", "think", "chat", "picture_to_sound"),
         "video": ("clip_caption", "clip_qa", "clip_next"),
         "audio": ("sound_caption", "sound_qa", "sound_to_picture", "sound_next")}
DRAWS = {"image": ("draw", "sound_to_picture"), "video": ("clip_draw", "clip_next"),
         "audio": ("sound_draw", "picture_to_sound", "sound_next")}


def capabilities(mix: dict) -> dict:
    """What a model trained on `mix` (task -> weight) can do: the modalities it reads and draws,
    and whether it thinks before answering. Training writes it into the checkpoint's meta.json."""
    on = {task for task in TASKS if isinstance(mix.get(task), (int, float)) and mix[task] > 0}
    return {"reads": [m for m, tasks in READS.items() if on.intersection(tasks)],
            "draws": [m for m, tasks in DRAWS.items() if on.intersection(tasks)], "thinks": "think" in on}
