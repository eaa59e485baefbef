"""The tasks a training stream mixes, by name (`--mix caption=0.3 ...`), what a model trained on a
mix can do (recorded in its checkpoint), and the words that ask for the one task a user can only
name: continuing a clip."""

TASKS = ("caption", "draw", "qa", "think", "chat", "clip_caption", "clip_draw", "clip_qa", "clip_next")
PICTURE_TASKS, CLIP_TASKS = TASKS[:5], TASKS[5:]
CONTINUE = "continue the clip"  # what the user says to have a clip's first frames continued

# Which modality each task teaches a model to read, and to draw.
READS = {"image": ("caption", "qa", "think", "chat"), "video": ("clip_caption", "clip_qa", "clip_next")}
DRAWS = {"image": ("draw",), "video": ("clip_draw", "clip_next")}


def capabilities(mix: dict) -> dict:
    """What a model trained on `mix` (task -> weight) can do: the modalities it reads and draws,
    and whether it thinks before answering. Training writes it into the checkpoint's meta.json."""
    on = {task for task in TASKS if isinstance(mix.get(task), (int, float)) and mix[task] > 0}
    return {"reads": [m for m, tasks in READS.items() if on.intersection(tasks)],
            "draws": [m for m, tasks in DRAWS.items() if on.intersection(tasks)], "thinks": "think" in on}
