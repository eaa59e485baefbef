"""The tasks a training stream mixes, by name (`--mix caption=0.3 ...`), and the words that ask
for the one task a user can only name: continuing a clip."""

TASKS = ("caption", "draw", "qa", "think", "chat", "clip_caption", "clip_draw", "clip_qa", "clip_next")
PICTURE_TASKS, CLIP_TASKS = TASKS[:5], TASKS[5:]
CONTINUE = "continue the clip"  # what the user says to have a clip's first frames continued
