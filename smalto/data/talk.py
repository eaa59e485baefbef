"""Conversations: what people say to a model of ShapesWorld, and what it should say back.

A conversation is a list of `Turn`s, each a user message of one *kind* with the reply it calls
for: a greeting, thanks, a request outside the world (to talk or to draw), a request to describe
the picture (answered with its caption), a question about the picture (its answer, or a follow-up
that says only "it"), or a picture question with no picture in the conversation. Kinds come in
any order, with or without a picture, which may arrive with the first message or later, as people
start chats. Every phrasing pool is split in two: `split="train"` draws the phrasings training
sees, `split="heldout"` the ones only the evaluation uses (`smalto.eval.conversations`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from smalto.data.shapes import Sample, Scene

# The model's whole repertoire, said briefly and honestly when a message is not about a picture.
# (Short: this byte-level BPE spends a token on every few letters of words outside ShapesWorld.)
HELLO_REPLY = "hi! i describe, answer questions about and draw shapes."
THANKS_REPLY = "you're welcome!"
OFF_TOPIC_REPLY = "sorry, i only know shapes. i describe, answer questions about and draw them."
DRAW_SCOPE_REPLY = "i can only draw circles, squares and triangles in six colours."
NO_PICTURE_REPLY = "i see no picture. attach one and ask again."

def _product(*parts) -> tuple[str, ...]:
    """Every phrasing made of one choice from each part, in order (a part is a tuple of strings)."""
    out = [""]
    for part in parts:
        out = [f"{a}{b}" for a in out for b in part]
    return tuple(dict.fromkeys(x.strip() for x in out))


# Phrasings only the evaluation uses, written apart from the training ones below: their words and
# templates are partly new ("cheers", "how are you", "portrait", "castle"), partly recombined.
HELD_OUT = {
    "greeting": ("good evening", "hey, how are you?", "hello, anyone there?", "hi, who am i talking to?", "hiya",
                 "what are you able to do?", "morning!", "hello friend"),
    "thanks": ("thank you so much", "thanks, that helps", "awesome, thanks!", "cheers"),
    "off_topic": ("what should i eat for dinner?", "explain quantum physics", "recommend a good movie",
                  "how tall is mount everest?", "what is the capital of italy?", "who wrote hamlet?",
                  "what time is it?", "tell me a story"),
    "draw_outside": ("draw a cat wearing a hat", "paint me a portrait", "draw a boat on the sea", "sketch a castle"),
    "describe": ("describe this picture please", "what can you see?", "what does this image show?",
                 "write a caption for this", "describe what you see", "what is shown here?"),
}
_TRAINING = {
    "greeting": _product(("hello", "hi", "hey", "hi there", "hello there", "hey there", "good morning",
                          "good afternoon", "greetings", "howdy", "yo", "heya"), ("", "!", "?", ",", "."),
                         ("", " what can you do?", " who are you?", " what are you?", " what do you do?",
                          " how can you help me?", " can you help me?")) +
    ("who are you?", "what can you do?", "what are you?", "what do you do?", "help"),
    "thanks": _product(("thanks", "thank you", "thx", "ty", "many thanks", "thanks a lot", "thank you very much",
                        "great, thanks", "ok thanks", "cool, thank you", "perfect, thanks", "nice, thank you",
                        "got it, thanks", "great, thank you", "ok, thank you", "thanks again"), ("", "!", ".")),
    "off_topic": (
        _product(("what is the capital of ",), ("france", "spain", "germany", "japan", "peru", "kenya", "canada"),
                 ("?",))
        + _product(("tell me a ", "tell me another "), ("joke", "poem", "riddle", "fun fact", "secret"))
        + _product(("write me a ", "write a "), ("poem", "song", "letter", "short essay", "email", "limerick"))
        + _product(("how do i ",), ("cook rice", "fix my car", "learn french", "bake bread", "tie a tie",
                                     "lose weight", "get rich", "sleep better"), ("?",))
        + _product(("what is ",), ("17", "3", "12", "250"), (" times ", " plus ", " minus "), ("23", "4", "9"), ("?",))
        + _product(("what is the weather like ",), ("today", "tomorrow", "in paris", "outside"), ("?",))
        + _product(("explain ",), ("gravity", "photosynthesis", "the stock market", "black holes", "the internet",
                                    "democracy"))
        + _product(("recommend a good ", "suggest a good "), ("book", "restaurant", "song", "podcast", "game"))
        + _product(("how ",), ("far away is the moon", "old is the universe", "deep is the ocean",
                                "big is the sun", "many people live in china"), ("?",))
        + _product(("who ",), ("invented the telephone", "painted the mona lisa", "discovered penicillin",
                                "is the president", "will win the next election", "is the richest person"), ("?",))
        + ("translate good night into spanish", "can you book me a flight?", "what is the meaning of life?",
           "what is your favourite food?", "tell me about the roman empire", "write some python code",
           "what day is it today?", "what year is it?", "sing me a song", "give me a recipe for cake",
           "what music do you like?", "what should i do this weekend?", "do you like football?",
           "what is love?", "are you alive?", "order me a pizza")),
    "draw_outside": _product(("draw ", "draw me ", "can you draw ", "please draw ", "paint ", "make a picture of ",
                              "show me ", "create an image of ", "generate a picture of ", "i want a picture of "),
                             ("a cat", "a dog", "a house", "a tree", "a sunset", "a car", "a flower", "a horse",
                              "a face", "a bird", "a mountain", "a robot", "a dragon", "a city", "my family",
                              "a person", "an elephant", "a rainbow", "a banana", "a heart", "a train", "a fish"),
                             ("", "?", " please")),
    "describe": (
        _product(("describe ", "caption ", "can you describe ", "please describe ", "now describe "),
                 ("the picture", "this picture", "the image", "this image", "it", "this", "the photo", "the scene"),
                 ("", "?", ".", " please"))
        + _product(("what is in ", "what's in "), ("the picture", "this picture", "the image", "this image", "it"),
                   ("?",))
        + _product(("what do you see", "what does the picture show", "what does the image show",
                    "tell me what you see", "tell me what is in the picture", "what is on the picture",
                    "give me a caption", "caption please", "a caption please", "and this one", "what about this one",
                    "and now this picture"), ("", "?"))),
}
# kind -> (training phrasings, held-out phrasings); no held-out phrasing is a training one.
PHRASINGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    kind: (tuple(p for p in _TRAINING[kind] if p not in HELD_OUT[kind]), HELD_OUT[kind]) for kind in HELD_OUT}
REPLIES = {"greeting": HELLO_REPLY, "thanks": THANKS_REPLY, "off_topic": OFF_TOPIC_REPLY,
           "draw_outside": DRAW_SCOPE_REPLY, "no_picture": NO_PICTURE_REPLY}
SOCIAL = ("greeting", "thanks", "off_topic", "draw_outside")
KINDS = (*SOCIAL, "describe", "question", "follow_up", "no_picture")
SPLITS = ("train", "heldout")

_REFERRING = {"position": ("where is it?", "and where is it?", "where is that one?"),
              "size": ("what size is it?", "how big is it?", "and what size is it?")}


@dataclass(frozen=True)
class Turn:
    kind: str  # one of KINDS
    text: str  # the user's message
    reply: str  # what a right reply says (for "describe", the canonical caption)
    picture: bool = False  # the conversation's picture comes with this message


def phrasing(kind: str, rng: np.random.Generator, split: str = "train") -> str:
    """One phrasing of a kind of message from a split; training's sometimes capitalised, as people type."""
    pool = PHRASINGS[kind][SPLITS.index(split)]
    text = pool[int(rng.integers(len(pool)))]
    return text[:1].upper() + text[1:] if split == "train" and rng.random() < 0.2 else text


def follow_ups(scene: Scene, rng: np.random.Generator, turns: int = 2) -> list[dict]:
    """A question naming one object, then `turns - 1` questions about it that say only "it"
    (the model must look back at the conversation), as {"q", "a"} pairs; [] if no object is the
    only one of its colour and shape."""
    unique = [o for o in scene.objects if scene.count(o.shape, o.color) == 1]
    if not unique:
        return []
    o = unique[rng.integers(len(unique))]
    first = {"q": f"is there a {o.color} {o.shape}?", "a": "yes"} if rng.random() < 0.5 else \
        {"q": f"where is the {o.color} {o.shape}?", "a": o.position}
    left = [attr for attr in _REFERRING if not (attr == "position" and first["a"] != "yes")]
    out = [first]
    for attr in [left[k] for k in rng.permutation(len(left))][:turns - 1]:
        phrasings = _REFERRING[attr]
        out.append({"q": phrasings[rng.integers(len(phrasings))], "a": getattr(o, attr)})
    return out


def conversation(rng: np.random.Generator, sample: Sample | None, split: str = "train") -> list[Turn]:
    """One conversation of one to six turns. With a sample, two in three are about its picture:
    up to two social turns, perhaps a request to describe it, and questions (a chain of
    follow-ups, or one of the sample's questions), shuffled, the picture arriving with the first
    message or with the first that needs it. The rest are text only: social turns, and perhaps a
    question about a picture that was never attached."""
    social = [Turn(str(kind), phrasing(kind, rng, split), REPLIES[kind])
              for kind in rng.choice(SOCIAL, size=int(rng.integers(1, 3)), replace=False)]
    if sample is None or rng.random() < 1 / 3:
        if sample is not None and rng.random() < 0.5:
            text = phrasing("describe", rng, split) if rng.random() < 0.5 or not sample.qa else \
                sample.qa[int(rng.integers(len(sample.qa)))]["q"]
            social.insert(int(rng.integers(len(social) + 1)), Turn("no_picture", text, NO_PICTURE_REPLY))
        return social
    social = social[:int(rng.integers(0, 3))]
    # (a folder's record may have no scene graph to refer back in, or no questions at all)
    chain = follow_ups(sample.scene, rng, int(rng.integers(1, 4))) \
        if sample.scene is not None and rng.random() < 0.6 else []
    about = [Turn("question" if k == 0 else "follow_up", p["q"], p["a"]) for k, p in enumerate(chain)]
    if not about and sample.qa:
        pair = sample.qa[int(rng.integers(len(sample.qa)))]
        about = [Turn("question", pair["q"], pair["a"])]
    if rng.random() < 0.5 or not social or not about:
        about.insert(0 if rng.random() < 0.5 else len(about),
                     Turn("describe", phrasing("describe", rng, split), sample.captions[0]))
    # The picture's turns keep their order (a follow-up after its question); social ones fall between.
    slots = sorted(rng.choice(len(about) + len(social), size=len(about), replace=False).tolist())
    turns, rest, about_left = [], iter(social), iter(about)
    for k in range(len(about) + len(social)):
        turns.append(next(about_left) if k in slots else next(rest))
    first = 0 if rng.random() < 0.5 else slots[0]
    turns[first] = replace(turns[first], picture=True)
    return turns
