"""Chords: progressions of two- and three-note chords whose start says how they go on, and the
sound verifier reading every note of a chord back exactly."""

import numpy as np
import pytest

from smalto.data.chords import Chord, ChordWorld, continued, render_chords
from smalto.data.melodies import GIVEN, SLOTS
from smalto.data.sounds import SoundConfig
from smalto.verify.hearing import parse_chords, parse_sound

CFG = SoundConfig()


def test_the_verifier_hears_every_chord_of_every_progression_exactly():
    world = ChordWorld(CFG, seed=4)
    rules = set()
    for i in range(150):
        truth = world.progression(i)
        rules.add((truth.rule, truth.period))
        assert parse_chords(world.wave(i), CFG) == truth.slots, i
    assert {rule for rule, _ in rules} == {"motif", "parallel"} and len(rules) == 4
    sizes = {len(c.colors) for i in range(150) for c in world.progression(i).slots if c}
    assert sizes == {2, 3}


@pytest.mark.parametrize("change", ["color", "shape", "size", "note", "rest"])
def test_each_corruption_of_a_chord_is_heard_as_that_corruption(change):
    chord = Chord(frozenset({"red", "blue", "yellow"}), "square", "small")
    changed = {"color": Chord(frozenset({"red", "blue", "purple"}), "square", "small"),
               "shape": Chord(chord.colors, "triangle", "small"),
               "size": Chord(chord.colors, "square", "large"),
               "note": Chord(frozenset({"red", "blue"}), "square", "small"),
               "rest": None}[change]
    slots = (chord,) * 4 + (changed,) + (chord,) * 4
    heard = parse_chords(render_chords(slots, CFG, np.random.default_rng(0)), CFG)
    assert heard == slots and heard[4] != chord


def test_a_progression_is_continued_when_every_slot_after_the_given_ones_is_heard_as_the_truths():
    world = ChordWorld(CFG, seed=1)
    truth = world.progression(3)
    heard = parse_chords(world.wave(3), CFG)
    assert all(continued(truth, heard, g) for g in GIVEN)
    wrong = heard[:-1] + (None,) if heard[-1] is not None else heard[:-1] + (truth.slots[0],)
    assert not continued(truth, wrong, GIVEN[0])
    assert len(truth.slots) == SLOTS


def test_a_chord_is_as_loud_as_a_note_and_a_single_note_chord_is_the_note():
    single = (Chord(frozenset({"green"}), "circle", "large"),) + (None,) * 8
    wave = render_chords(single, CFG)
    assert parse_sound(wave, CFG).objects[0].color == "green" and parse_chords(wave, CFG) == single
    loud = render_chords((Chord(frozenset({"red", "green", "cyan"}), "triangle", "large"),) * 9, CFG)
    assert np.abs(loud).max() <= 1.0, "three notes sharing a large note's loudness stay in range"
    assert single[0].words() == "a large green circle"
    assert Chord(frozenset({"blue", "red", "green"}), "square", "small").words() == \
        "a small red, green and blue square chord"
