"""The cells layout (issue 28): a drawing written cell by cell, each cell's words before its codes.
The format writes and reads it back in raster order, the grammar keeps every row well-formed,
ShapesWorld's cells own their patches, and a model trained in it draws, reads and trains by RL."""

import numpy as np
import pytest
import torch

import smalto
from smalto.checkpoint import load_checkpoint
from smalto.data.shapes import GRID, Obj, Scene, ShapesConfig, cell_patches, cell_words, render
from smalto.errors import SmaltoError
from smalto.format import DRAWING, FormatState, Vocab, draw_example, draw_prompt, positions
from smalto.inference import Engine, Sampling
from smalto.model import ModelConfig, Transformer
from smalto.training.rl import RLConfig, train_rl
from smalto.training.trainer import TrainConfig, train

from test_engine import V

BLOCKS = ((3, 0), (1,), (2,))  # a toy layout of the 2x2 grid, out of raster order on purpose
L = V.with_layout("cells", "image", BLOCKS, 2)
CODES = torch.tensor([[3, 1], [4, 5]])
WORDS = [[20, 21], [22, 23], [24, 25]]


def test_a_layout_writes_each_blocks_words_then_its_codes_and_reads_back_in_raster_order():
    start = L.ranges["image"].start
    ids = L.item_ids("cells", CODES, WORDS)
    assert ids == [L.reserved_1, 20, 21, start + 5, start + 3, 22, 23, start + 1, 24, 25, start + 4, L.eoi]
    assert L.item_codes(ids[1:-1], "cells").equal(CODES.view(1, 2, 2))
    assert L.item_words(ids[1:-1], "cells") == WORDS
    assert L.modalities["cells"].tokens == 4 + 3 * 2
    assert Vocab.from_json(L.to_json()) == L
    assert L.drawn("image") == "cells" and V.drawn("image") == "image" and L.drawn("video") == "video"
    e = draw_example(L, [30], CODES, words=WORDS)
    assert e.ids == [L.bos, L.user, 30, L.assistant, *ids, L.eos]
    assert [i for i, m in zip(e.ids, e.loss_mask) if m] == [*ids, L.eos]
    assert draw_prompt(L, [30]) == e.ids[:5]


def test_a_lexicon_narrows_each_word_to_its_ids_and_labels_write_themselves():
    lexicon = (((16,), (20, 21)), ((17,), (22,)), ((18,), (20, 23)))  # a label, then a word, per block
    lex = V.with_layout("cells", "image", BLOCKS, 2, lexicon)
    assert Vocab.from_json(lex.to_json()) == lex and lex.modalities["cells"].lexicon == lexicon
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=lex.size, dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                                    mlp_hidden=128, max_seq_len=64))
    rows = Engine(model, lex).generate([draw_prompt(lex, [30])] * 8, 40, Sampling(temperature=2.0, seed=5), DRAWING)
    said = [lex.item_words(r.tokens[:-1], "cells") for r in rows]
    for words in said:
        assert [w[0] for w in words] == [16, 17, 18] and words[1][1] == 22
        assert words[0][1] in (20, 21) and words[2][1] in (20, 23)
    assert len({w[0][1] for w in said}) > 1  # the free choices are still the model's
    with pytest.raises(ValueError, match="its lexicon"):
        V.with_layout("cells", "image", BLOCKS, 2, lexicon[:2])
    with pytest.raises(ValueError, match="its lexicon"):
        V.with_layout("cells", "image", BLOCKS, 2, (((16,), ()),) * 3)


def test_a_layout_that_misses_a_code_or_lacks_its_words_is_refused():
    with pytest.raises(ValueError, match="blocks cover one frame's codes once"):
        V.with_layout("cells", "image", ((0, 1), (2,)), 2)
    with pytest.raises(ValueError, match="blocks cover one frame's codes once"):
        V.with_layout("cells", "image", ((0, 1), (1, 2, 3)), 2)
    with pytest.raises(ValueError, match="2 words before each of its 3 blocks"):
        L.item_ids("cells", CODES)
    with pytest.raises(ValueError, match="2 words before each of its 3 blocks"):
        L.item_ids("cells", CODES, [[20], [21], [22]])


def test_words_sit_where_their_block_begins_under_the_grid_rule():
    grid = Vocab(L.ranges, L.specials, L.modalities, "grid")
    where = positions(grid, draw_example(grid, [30], CODES, words=WORDS).ids).T.tolist()
    s = 5  # the position after <|reserved_1|> (at 4)
    body = where[5:15]
    assert body[0] == body[1] == body[2] == [s + 0, s + 1, s + 1]  # block (3, 0) begins at code 3: row 1, col 1
    assert body[4] == body[5] == body[6] == [s + 0, s + 0, s + 1]  # block (1,): row 0, col 1
    assert where[15][0] == s + 2  # <eoi> after the grid's extent, as a raster image's
    # (the index rule, a 1-D model's: the running index, words and codes alike)
    assert positions(L, draw_example(L, [30], CODES, words=WORDS).ids)[0].tolist() == list(range(17))


def test_decoding_in_the_layout_emits_words_at_word_slots_and_codes_at_code_slots():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=L.size, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, mlp_hidden=128,
                                    max_seq_len=64))
    rows = Engine(model, L).generate([draw_prompt(L, [30])] * 6, 40, Sampling(temperature=2.0, seed=3), DRAWING)
    text, image = L.text_mask(), L.mask("image")
    for r in rows:
        assert len(r.tokens) == 11 and r.tokens[-1] == L.eoi  # ten body tokens, then the close: the row is done
        body = r.tokens[:-1]
        kinds = ["w" if text[t] else "c" if image[t] else "?" for t in body]
        assert kinds == list("wwccwwcwwc")
    state = FormatState(L, [draw_prompt(L, [30])], DRAWING)
    assert state.mask()[0].equal(text)


def test_shapesworlds_cells_own_the_patches_their_objects_cover():
    cfg = ShapesConfig()
    patches = cell_patches(cfg, 8)
    assert sorted(i for p in patches for i in p) == list(range(64))
    assert [len(p) for p in patches] == [9, 6, 9, 6, 4, 6, 9, 6, 9]
    background = render(Scene((), ()), cfg)
    for k in range(GRID * GRID):
        image = render(Scene((Obj(k // GRID, k % GRID, "square", "red", "large"),), ()), cfg)
        changed = np.argwhere((image != background).any(-1))
        assert {(r // 4) * 8 + c // 4 for r, c in changed} <= set(patches[k]), k
    words = cell_words(Scene((Obj(1, 2, "circle", "blue", "small"),), ()))
    assert words[5] == "6 small blue circle" and words[0] == "1---" and len(words) == 9


def test_the_cells_layout_needs_shapesworld_and_a_known_name(tmp_path):
    with pytest.raises(SmaltoError, match="layout must be one of raster, cells"):
        TrainConfig(layout="mosaic")
    with pytest.raises(SmaltoError, match="needs ShapesWorld data, not a folder"):
        train(tmp_path / "run", TrainConfig(preset="shapes-micro", data=str(tmp_path), layout="cells", steps=1),
              progress=False)


@pytest.fixture(scope="module")
def cells(micro_base, tmp_path_factory):
    """The micro base fine-tuned for a few steps in the cells layout."""
    out = tmp_path_factory.mktemp("cells") / "run"
    train(out, TrainConfig(init_from=str(micro_base), layout="cells", steps=4, batch_size=8, warmup=1,
                           eval_every=0, save_every=4, precision="fp32"), progress=False)
    return out


def test_a_model_trained_in_the_cells_layout_draws_in_it_and_keeps_it(cells, tmp_path):
    _, v, tok, _ = load_checkpoint(cells)
    m = v.modalities["cells"]
    assert v.drawn("image") == "cells" and m.words == 4 and len(m.blocks) == 9
    assert [block[0] for block in m.lexicon] == [tuple(tok.text.encode(f"{k}")) for k in range(1, 10)]
    assert [tok.text.decode([i]) for i in m.lexicon[0][3]] == sorted(["-", " circle", " square", " triangle"],
                                                                      key=lambda w: tok.text.encode(w)[0])
    pipe = smalto.load(cells)
    bodies = pipe.item_bodies([draw_prompt(v, pipe.text_ids("a small red circle at the center"))], Sampling(seed=0),
                              "image")
    assert len(bodies[0]) == m.tokens
    assert all(v.text_mask()[t] for block in v.item_words(bodies[0], "cells") for t in block)
    images = pipe.draw(["a small red circle at the center", "a large blue square at the top left"])
    assert len(images) == 2 and images[0].shape == (32, 32, 3)
    reading = pipe.caption_prompts([images[0]])[0]  # reading a picture stays raster: it has no words to give
    assert v.boi in reading and v.reserved_1 not in reading
    with pytest.raises(SmaltoError, match="draws in the cells layout"):
        train(tmp_path / "back", TrainConfig(init_from=str(cells), layout="raster", steps=1), progress=False)


def test_rl_rolls_out_drawings_in_the_cells_layout(cells, tmp_path):
    log = train_rl(tmp_path / "rl", RLConfig(init_from=str(cells), steps=1, prompts=2, group=2, eval_every=0,
                                             save_every=1), progress=False)
    assert np.isfinite(log[-1]["reward"]) and load_checkpoint(tmp_path / "rl")[1].drawn("image") == "cells"


def test_words_given_to_a_cells_model_are_written_and_it_draws_the_codes_between_them(cells):
    """Effort's path: the solver's plan says what each cell holds, the model draws the codes."""
    pipe = smalto.load(cells)
    v, text = pipe.vocab, pipe.tokenizers.text
    m = v.modalities["cells"]
    words = cell_words(Scene((Obj(1, 1, "circle", "red", "small"), Obj(0, 2, "square", "blue", "large")), ()))
    forced = [t for said, block in zip(words, m.blocks) for t in text.encode(said) + [None] * len(block)]
    assert pipe.forced_words([words]) == [forced]
    prompt = draw_prompt(v, pipe.text_ids("a small red circle at the center"))
    free = pipe.item_bodies([prompt], Sampling(seed=0), "image")[0]
    given = pipe.item_bodies([prompt], Sampling(seed=0), "image", forced=[forced])[0]
    assert v.item_words(given, "cells") == [text.encode(w) for w in words] != v.item_words(free, "cells")
    assert all(v.mask("image")[t] for t, where in zip(given, m.body()) if isinstance(where, tuple))
    drawn = pipe.drawings("a small red circle at the center", effort="medium")[0]
    assert drawn.verdict is not None and drawn.candidates == 4


def test_a_scene_the_layout_has_no_words_for_is_drawn_in_raster_order(cells):
    """Fine-tuning a cells model on shapes-plus: "a small orange diamond" is not four words of its
    lexicon, so that drawing is written as a plain image; the others keep the layout."""
    from smalto.training.data import ExampleStream, TaskMix

    assert draw_example(L, [30], CODES).ids[4:] == [*V.image_ids(CODES), L.eos]
    _, v, tok, _ = load_checkpoint(cells)
    stream = ExampleStream(tok, v, "shapes-plus", TaskMix(caption=0, draw=1, qa=0, cond_dropout=0), seed=0, max_len=160)
    opened = {"plain": 0, "cells": 0}
    for i, (_, e) in enumerate(stream.examples(0, 40)):
        scene = stream.world[i].scene
        new = any(o.shape == "diamond" or o.color == "orange" for o in scene.objects)
        opened["plain" if v.boi in e.ids else "cells"] += 1
        assert (v.boi in e.ids) == new and (v.reserved_1 in e.ids) != new, scene
    assert min(opened.values()) > 0
