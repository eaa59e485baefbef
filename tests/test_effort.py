"""Test-time compute through the Python API and the CLI: thinking, votes, planned and verified
drawings, the self-verifier, and the errors a user can cause."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from smalto.apps.cli import main
from smalto.data.shapes import ShapesConfig, ShapesWorld, cell_words, premise_question
from smalto.effort import EFFORTS, SURE
from smalto.errors import SmaltoError
from smalto.verify.scene import parse_image
from smalto.verify import smt
from smalto.verify.smt import Contradiction, check
from smalto.verify.spec import SpecError, parse_prompt

WORLD = ShapesWorld(ShapesConfig(), 20_000, "train")  # not the evaluation seed
SCENES = [WORLD[i] for i in range(12)]


def test_the_shipped_model_thinks_and_its_answers_are_checked_by_the_solver(shipped):
    assert shipped.thinks and shipped.world
    questions = [s.qa[0]["q"] for s in SCENES[:6]] + ["what color is the square?"] * 6
    replies = shipped.reply_batch([s.image for s in SCENES], questions, effort="medium")
    assert all(r.reasoning and r.reasoning_tokens >= 3 and r.tokens > r.reasoning_tokens for r in replies)
    # a description, then the facts; the solver reads the description and computes the answer
    assert sum(r.check in ("agrees", "corrected") and ";" in r.reasoning for r in replies) >= 10


def test_effort_none_is_the_instant_answer(shipped):
    images, questions = [s.image for s in SCENES], [s.qa[1]["q"] for s in SCENES]
    instant = shipped.reply_batch(images, questions, effort="none")
    assert [r.text for r in instant] == shipped.ask_batch(images, questions)
    assert all(not r.reasoning and r.reasoning_tokens == 0 and r.check is None for r in instant)


@pytest.mark.parametrize("budget", [1, 7])
def test_the_thinking_budget_is_never_exceeded(shipped, budget):
    images, questions = [s.image for s in SCENES[:6]], [s.qa[2]["q"] for s in SCENES[:6]]
    one = shipped.reply_batch(images, questions, effort="medium", thinking_budget=budget)
    assert all(r.reasoning_tokens <= budget + 2 for r in one)  # <think>, at most `budget` tokens, </think>
    assert any(r.reasoning_tokens == budget + 2 for r in one)  # traces are longer: the budget binds
    voted = shipped.reply_batch(images, questions, effort="high", best_of=3, thinking_budget=budget)
    assert all(r.reasoning_tokens <= 3 * (budget + 2) for r in voted)


def test_adaptive_thinks_only_when_unsure(shipped):
    images, questions = [s.image for s in SCENES], [s.qa[0]["q"] for s in SCENES]
    low = shipped.reply_batch(images, questions, effort="low")
    instant = shipped.reply_batch(images, questions, effort="none")
    for fast, adaptive in zip(instant, low):
        if fast.sure >= SURE:
            assert adaptive.text == fast.text and not adaptive.reasoning
        else:
            assert adaptive.reasoning and adaptive.tokens > fast.tokens


def test_self_consistency_votes_and_counts_every_vote(shipped):
    r = shipped.reply_batch([SCENES[0].image], [SCENES[0].qa[0]["q"]], best_of=5)[0]
    assert sum(r.votes.values()) == 5 and r.votes[r.text] == max(r.votes.values())
    assert r.sure == r.votes[r.text] / 5


def test_false_premises_are_answered_with_thinking(shipped):
    items = [(s.image, premise_question(s.scene, WORLD.cfg, np.random.default_rng(i))) for i, s in enumerate(SCENES)]
    false = [(im, q) for im, q in items if q["type"] == "false_premise"]
    replies = shipped.reply_batch([im for im, _ in false], [q["q"] for _, q in false], effort="medium")
    assert sum(r.text == q["a"] for r, (_, q) in zip(replies, false)) >= len(false) - 1


def test_best_of_one_is_plain_sampling(shipped):
    prompt = "a small red circle at the top left"
    drawings = shipped.drawings(prompt, n=3, best_of=1, seed=4)
    plain = shipped.draw([prompt] * 3, shipped.draw_sampling(4))
    assert all(np.array_equal(d.image, p) for d, p in zip(drawings, plain))
    assert shipped.generate_image(prompt, n=3, seed=4)[1].tobytes() == plain[1].tobytes()


def test_best_of_n_keeps_the_first_candidate_that_satisfies_the_spec(shipped):
    prompt = "a large yellow triangle left of a small cyan circle"
    spec = parse_prompt(prompt)
    drawing = shipped.drawings(prompt, n=1, effort="medium", seed=2)[0]
    assert drawing.candidates == EFFORTS["medium"].best_of and drawing.prompt != prompt
    assert all(t.cell is not None for t in parse_prompt(drawing.prompt).things)  # drawn in absolute form
    # (the shipped model draws cell by cell: the candidates were given the plan's words for each cell)
    words = [cell_words(smt.plan(spec, replace(shipped.world, image_size=shipped.image_size), 2))] * drawing.candidates
    candidates = shipped.draw([drawing.prompt] * drawing.candidates, shipped.draw_sampling(2), words=words)
    verdicts = [check(spec, parse_image(im)) for im in candidates]
    first = next((k for k, v in enumerate(verdicts) if v.satisfied), max(range(len(verdicts)),
                                                                           key=lambda k: verdicts[k].score))
    assert np.array_equal(drawing.image, candidates[first]) and drawing.verdict == verdicts[first]


def test_drawing_errors_name_the_words_or_the_conflict(shipped):
    with pytest.raises(SpecError, match="'banana'"):
        shipped.drawings("a purple banana", effort="low")
    with pytest.raises(Contradiction, match="a circle left of a square"):
        shipped.drawings("a circle left of a square and the square left of the circle", effort="high")
    with pytest.raises(SmaltoError, match="at most 256"):
        shipped.drawings("a red circle", n=8, best_of=64)
    with pytest.raises(SmaltoError, match="effort must be one of"):
        shipped.drawings("a red circle", effort="maximum")
    assert len(shipped.drawings("a purple banana", effort="none")) == 1  # instant drawing takes any text


def test_the_self_verifier_prefers_the_image_a_caption_describes(shipped):
    wins = 0
    for a, b in zip(SCENES[:10], SCENES[1:11]):
        right, wrong = shipped.caption_logprob([a.image, b.image], a.captions[0])
        wins += right > wrong
    assert wins >= 9


def test_without_a_pixel_verifier_best_of_n_ranks_by_the_self_verifier(shipped, monkeypatch):
    monkeypatch.setattr(shipped, "world", False)
    prompt = "a small red circle at the top left"
    drawing = shipped.drawings(prompt, best_of=4, seed=1)[0]
    candidates = shipped.draw([prompt] * 4, shipped.draw_sampling(1))
    scores = shipped.caption_logprob(candidates, prompt)
    assert drawing.verdict is None and drawing.score == max(scores)
    assert np.array_equal(drawing.image, candidates[int(np.argmax(scores))])


def test_the_cli_thinks_on_stderr_and_answers_on_stdout(tmp_path, capsys):
    from smalto.plots import save_png

    image = tmp_path / "scene.png"
    save_png(image, SCENES[0].image)
    assert main(["ask", str(image), "what color is the square?", "--effort", "medium"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("thinking: ") and out.strip() and "\n" not in out.strip()
    assert main(["generate", "a small red circle left of a large blue square", "--effort", "low", "--out",
                 str(tmp_path / "a.png")]) == 0
    out = capsys.readouterr().out
    # what came out first (the verifier's reading), the plan beside it: "at the" cells, not "left of"
    assert out.startswith("image 1: the verifier reads '") and "(best of 2); planned as 'a " in out
    assert "small red circle at the " in out.split("planned as")[1]


def test_the_cli_refuses_a_contradiction_in_one_line():
    r = subprocess.run([sys.executable, "-m", "smalto", "generate", "five objects", "--effort", "low"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "'five objects'" in r.stderr
