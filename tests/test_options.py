"""One rule for numeric options: NaN, ±inf and out-of-range values are refused by the CLI, the
Python API and HTTP alike, with the same words."""

from __future__ import annotations

import argparse
import json
import math

import httpx
import pytest

from smalto.export import pack
from smalto.apps.cli import build_parser
from smalto.inference import Sampling
from smalto.errors import SmaltoError
from smalto.options import SAMPLING, Range
from smalto.apps.serve import ServeConfig
from smalto.training.data import TaskMix
from smalto.training.trainer import TrainConfig

from conftest import running_server

NAME = "options-test"


def bad_values(r: Range) -> list:
    """Values just outside `r`, plus the non-finite ones (and a fraction for an integer option)."""
    values = [math.nan, math.inf, -math.inf]
    if r.low is not None:
        values.append(r.low if r.low_open else r.low - 1)
    if r.high is not None:
        values.append(r.high + 1)
    if r.integer:
        values.append(0.5 + (r.low or 0))
    return values


def numeric_flags():
    """(command words, flag, action) for every flag of every subcommand, found by walking the parser."""
    def walk(parser: argparse.ArgumentParser, words: list[str]):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, [*words, name])
            elif action.option_strings:
                yield words, action.option_strings[-1], action
    return list(walk(build_parser(), []))


FLAGS = [(words, flag, action) for words, flag, action in numeric_flags() if hasattr(action.type, "range")]


def test_every_numeric_flag_has_a_range():
    untyped = [f"{' '.join(w)} {flag}" for w, flag, a in numeric_flags()
               if a.type in (int, float) and not a.choices]
    assert not untyped, untyped
    assert len(FLAGS) >= 40


@pytest.mark.parametrize("words, flag, action", FLAGS, ids=[f"{' '.join(w)} {f}" for w, f, _ in FLAGS])
def test_every_numeric_flag_refuses_nan_inf_and_out_of_range(words, flag, action, capsys):
    r: Range = action.type.range
    assert action.default is None or r.contains(action.default) or isinstance(action.default, tuple)
    for value in bad_values(r):
        if isinstance(action.nargs, int):  # e.g. --mix CAPTION DRAW QA: the bad value comes first
            args = [flag, str(value), *["1"] * (action.nargs - 1)]
        else:
            args = [f"{flag}={value}"]  # "--x=-inf": a bare "-inf" would read as an option
        with pytest.raises(SystemExit) as info:
            build_parser().parse_args([*words, *args])
        err = capsys.readouterr().err
        assert info.value.code == 2 and err.startswith(f"smalto: error: argument {flag}"), err
        assert "Traceback" not in err
        assert r.describe() in err or (value == -math.inf and isinstance(action.nargs, int)), err


@pytest.mark.parametrize("name", ["temperature", "top_k", "top_p", "seed"])
def test_sampling_refuses_what_the_table_refuses(name):
    for value in bad_values(SAMPLING[name]):
        with pytest.raises(SmaltoError) as info:
            Sampling(**{name: value})
        assert str(info.value).startswith(f"{name} must be {SAMPLING[name].describe()}, got")
    Sampling(**{name: SAMPLING[name].low})  # the edge itself is fine


@pytest.mark.parametrize("option, value", [("guidance", math.nan), ("guidance", -1), ("guidance", math.inf),
                                           ("temperature", math.nan), ("temperature", -1), ("top_k", -2),
                                           ("top_p", 1.5), ("seed", -1)])
def test_the_pipeline_refuses_bad_drawing_options(shipped, option, value):
    with pytest.raises(SmaltoError, match=option):
        shipped.generate_image("a red circle", **{option: value})


@pytest.mark.parametrize("beams", [0, -5, 17, 2.5])
def test_the_pipeline_and_engine_refuse_bad_beam_counts(shipped, beams):
    with pytest.raises(SmaltoError, match="beams must be an integer in"):
        shipped.caption(shipped.generate_image("a red circle")[0], beams=beams)
    with pytest.raises(SmaltoError, match="beams"):
        shipped.engine.beam_search([shipped.vocab.bos], beams=beams)


def test_drawing_defaults_from_a_checkpoint_are_checked_like_arguments(shipped, tmp_path):
    with pytest.raises(SmaltoError, match="temperature"):
        pack(shipped.path, tmp_path / "packed", draw={"temperature": math.nan})
    assert not (tmp_path / "packed").exists()
    out = pack(shipped.path, tmp_path / "packed")
    meta = json.loads((out / "meta.json").read_text())
    meta["draw"]["guidance"] = math.inf  # json writes Infinity, which Python reads back
    (out / "meta.json").write_text(json.dumps(meta))
    from smalto.pipeline import load
    with pytest.raises(SmaltoError, match=r"meta.json: draw.guidance must be a number in \[0, 20\]"):
        load(out)


@pytest.mark.parametrize("config, field", [
    (lambda: TrainConfig(lr=math.nan), "lr"), (lambda: TrainConfig(lr=math.inf), "lr"),
    (lambda: TrainConfig(grad_clip=-1.0), "grad_clip"), (lambda: TrainConfig(warmup=-1), "warmup"),
    (lambda: TaskMix(caption=math.nan), "mix"), (lambda: TaskMix(cond_dropout=1.5), "cond_dropout"),
    (lambda: ServeConfig(timeout=math.nan), "timeout"), (lambda: ServeConfig(max_image_pixels=0), "max_image_pixels"),
])
def test_configs_refuse_non_finite_and_out_of_range_numbers(config, field):
    with pytest.raises(SmaltoError, match=field):
        config()


@pytest.fixture(scope="module")
def server(shipped):
    with running_server(shipped, ServeConfig(model_name=NAME)) as url:
        yield url


CHAT = [(field, value) for field, name in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k"),
                                           ("seed", "seed")) for value in bad_values(SAMPLING[name])]
IMAGES = [(field, value) for field, name in (("guidance_scale", "guidance"), ("temperature", "temperature"),
                                             ("seed", "seed")) for value in bad_values(SAMPLING[name])]


@pytest.mark.parametrize("path, field, value", [("/v1/chat/completions", f, v) for f, v in CHAT] +
                         [("/v1/images/generations", f, v) for f, v in IMAGES])
def test_http_refuses_the_same_values_with_a_400_naming_the_field(server, path, field, value):
    body = {"model": NAME, field: value, **({"messages": [{"role": "user", "content": "hi"}]} if "chat" in path
                                             else {"prompt": "a red circle"})}
    r = httpx.post(f"{server}{path}", content=json.dumps(body), headers={"content-type": "application/json"},
                   timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == field and error["type"] == "invalid_request_error"
    name = "guidance" if field == "guidance_scale" else field
    assert error["message"].startswith(f"{field} must be {SAMPLING[name].describe()}, got"), error


def test_the_edges_are_accepted_over_http_top_p_0_being_greedy(server):
    def reply(**sampling):
        body = {"model": NAME, "messages": [{"role": "user", "content": "how many circles?"}], "max_tokens": 6,
                **sampling}
        r = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"]

    assert reply(temperature=2, top_p=0, seed=SAMPLING["seed"].high) == reply()


def test_the_schema_documents_the_same_bounds(server):
    schema = httpx.get(f"{server}/openapi.json").json()["components"]["schemas"]
    chat, images = schema["ChatCompletionRequest"]["properties"], schema["ImageGenerationRequest"]["properties"]
    assert chat["temperature"]["minimum"] == 0 and chat["temperature"]["maximum"] == 2
    assert chat["top_p"]["maximum"] == 1 and chat["seed"]["maximum"] == pytest.approx(SAMPLING["seed"].high)
    assert images["guidance_scale"]["maximum"] == SAMPLING["guidance"].high
