"""The HTTP API against a real server on loopback: the official openai client, and httpx for every error."""

import asyncio
import base64
import io
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from smalto.data import ShapesWorld
from smalto.plots import png_bytes
from smalto.apps.serve import ServeConfig

from conftest import free_port, running_server, wait_until_up
from hostile import bomb_png

NAME = "shapes-test"
SAMPLE = ShapesWorld(seed=7)[2]


def data_url(image: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


def ask(question: str, image=SAMPLE.image) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(image)}},
                                         {"type": "text", "text": question}]}]


@pytest.fixture(scope="module")
def server(shipped):
    with running_server(shipped, ServeConfig(model_name=NAME, max_queue=8, max_body_bytes=1 << 20)) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)


# --- the openai client

def test_chat_about_an_image_answers_as_the_model_does(client, shipped):
    question = SAMPLE.qa[0]["q"]
    r = client.chat.completions.create(model=NAME, messages=ask(question))
    assert r.object == "chat.completion" and r.model == NAME and r.id.startswith("chatcmpl-")
    assert r.choices[0].message.content == shipped.ask(SAMPLE.image, question)
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens == 1 + 1 + 66 + len(shipped.tokenizers.text.encode(question)) + 1
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_an_image_alone_is_captioned(client, shipped):
    image = {"type": "image_url", "image_url": {"url": data_url(SAMPLE.image)}}
    r = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": [image]}])
    assert r.choices[0].message.content == shipped.caption(SAMPLE.image)


def test_without_an_image_it_still_answers_in_text(client):
    r = client.chat.completions.create(model=NAME, messages=[{"role": "system", "content": "be kind"},
                                                             {"role": "user", "content": "hello"}], max_tokens=6)
    assert isinstance(r.choices[0].message.content, str) and r.choices[0].message.content
    assert r.usage.completion_tokens <= 6


def test_streaming_gives_the_same_reply_in_chunks(client):
    messages = ask("", ShapesWorld(seed=3)[0].image)  # a caption: several tokens long
    whole = client.chat.completions.create(model=NAME, messages=messages)
    chunks = list(client.chat.completions.create(model=NAME, messages=messages, stream=True,
                                                 stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content and len(chunks) > 4
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_n_choices_with_a_seed_are_reproducible(client):
    kwargs = dict(model=NAME, messages=[{"role": "user", "content": "a small red"}], n=3, temperature=1.5, seed=5,
                  max_tokens=12)  # (an unfinished phrase: a wide distribution to sample from)
    a, b = client.chat.completions.create(**kwargs), client.chat.completions.create(**kwargs)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert len({c.message.content for c in a.choices}) > 1  # sampled: the choices differ
    assert a.usage.completion_tokens <= 3 * 12 and a.usage.prompt_tokens == b.usage.prompt_tokens


def test_stop_and_max_tokens_end_the_reply(client, shipped):
    caption = shipped.caption(SAMPLE.image)
    word = caption.split()[2]
    r = client.chat.completions.create(model=NAME, messages=ask(""), stop=[f" {word}"])
    assert r.choices[0].message.content == caption[:caption.index(f" {word}")]
    assert r.choices[0].finish_reason == "stop"
    r = client.chat.completions.create(model=NAME, messages=ask(""), max_completion_tokens=2)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 2
    assert caption.startswith(r.choices[0].message.content)


def test_images_generate_matches_the_pipeline(client, shipped):
    r = client.images.generate(model=NAME, prompt="a small red circle at the center", n=2, size="32x32",
                               response_format="b64_json", extra_body={"seed": 4, "guidance_scale": 1.5})
    images = [np.asarray(Image.open(io.BytesIO(base64.b64decode(d.b64_json)))) for d in r.data]
    expected = shipped.generate_image("a small red circle at the center", n=2, guidance=1.5, seed=4)
    assert len(images) == 2 and all(np.array_equal(a, b) for a, b in zip(images, expected))
    # each picture with what the verifier reads in it (what came out), and no note: the prompt is in the world
    assert [d.model_extra["reading"] for d in r.data] == [shipped.read_drawing(im) for im in images]
    assert all(d.model_extra["note"] is None for d in r.data)


def test_a_prompt_outside_the_world_is_drawn_with_a_note_saying_so(client):
    r = client.images.generate(model=NAME, prompt="a cat wearing a hat", extra_body={"seed": 0})
    note = r.data[0].model_extra["note"]
    assert "'cat', 'wearing', 'hat'" in note and "knows only circles, squares, triangles" in note


def test_models_list_and_retrieve(client):
    assert [m.id for m in client.models.list()] == [NAME, "smalto-recogniser"]  # (transcriptions' model)
    assert client.models.retrieve(NAME).owned_by == "smalto"
    assert client.models.retrieve("smalto-recogniser").id == "smalto-recogniser"


@pytest.mark.parametrize("call, error", [
    (lambda c: c.chat.completions.create(model="gpt-4o", messages=ask("hi")), openai.NotFoundError),
    (lambda c: c.chat.completions.create(model=NAME, messages=ask("hi"), temperature=7), openai.BadRequestError),
    (lambda c: c.chat.completions.create(model=NAME, messages=[
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]),
     openai.BadRequestError),
    (lambda c: c.images.generate(model=NAME, prompt="a red circle", size="1024x1024"), openai.BadRequestError),
    (lambda c: c.images.generate(model=NAME, prompt="a red circle", n=11), openai.BadRequestError),
    (lambda c: c.models.retrieve("dall-e-3"), openai.NotFoundError),
])
def test_client_errors_raise_the_right_exceptions(client, call, error):
    with pytest.raises(error) as info:
        call(client)
    body = info.value.body
    assert set(body) >= {"message", "type", "param", "code"} and body["message"]


def test_a_wrong_or_missing_key_is_refused(shipped):
    with running_server(shipped, ServeConfig(model_name=NAME, api_key="sesame")) as url:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
        r = httpx.get(f"{url}/v1/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{url}/health").status_code == 200  # health stays open
        ok = openai.OpenAI(base_url=f"{url}/v1", api_key="sesame", max_retries=0)
        assert ok.chat.completions.create(model=NAME, messages=ask(""), max_tokens=3).choices


# --- httpx: every error in OpenAI's shape, never a 500

def post(server, path, body=None, content=None, **kw):
    return httpx.post(f"{server}{path}", json=body, content=content, timeout=30, **kw)


def error_of(r, status):
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def png_in(raw: bytes) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "data:image/png;base64," + base64.b64encode(raw).decode()}}]}]


@pytest.mark.parametrize("body, param, code", [
    (b"{not json", None, None),
    (b"[]", None, None),
    ({"model": NAME}, "messages", None),
    ({"model": NAME, "messages": []}, "messages", None),
    ({"model": NAME, "messages": ask("hi"), "tools": []}, "tools", None),
    ({"model": NAME, "messages": ask("hi"), "n": 0}, "n", None),
    ({"model": NAME, "messages": ask("hi"), "top_p": 1.5}, "top_p", None),
    ({"model": NAME, "messages": ask("hi"), "seed": -1}, "seed", None),
    ({"model": NAME, "messages": ask("hi"), "stop": ["a", "b", "c", "d", "e"]}, "stop", None),
    ({"model": NAME, "messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "messages.0.content.0", None),
    ({"model": NAME, "messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role", None),
    ({"model": NAME, "messages": png_in(b"\x89PNG but not really")}, "messages.0.content.0.image_url",
     "invalid_image"),
    ({"model": NAME, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "data:image/png;base64,not*base64!"}}]}]}, "messages.0.content.0.image_url", "invalid_base64"),
    ({"model": NAME, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "http://example.com/cat.png"}}]}]}, "messages.0.content.0.image_url", "image_url_not_supported"),
    ({"model": NAME, "messages": [{"role": "assistant", "content": [{"type": "image_url", "image_url": {
        "url": data_url(SAMPLE.image)}}]}]}, "messages.0.content.0.image_url", None),
    ({"model": NAME, "messages": [{"role": "user", "content": "word " * 300}]}, "messages",
     "context_length_exceeded"),
])
def test_bad_chat_requests_are_400(server, body, param, code):
    r = post(server, "/v1/chat/completions", content=body if isinstance(body, bytes) else json.dumps(body).encode(),
             headers={"content-type": "application/json"})
    error = error_of(r, 400)
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["code"] == code


@pytest.mark.parametrize("body, param", [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "a red circle", "size": "64x64"}, "size"),
    ({"prompt": "a red circle", "response_format": "url"}, "response_format"),
    ({"prompt": "a red circle", "guidance_scale": -1}, "guidance_scale"),
    ({"prompt": "a red circle", "quality": "hd"}, "quality"),
    ({"prompt": "word " * 300}, "prompt"),
])
def test_bad_image_requests_are_400(server, body, param):
    assert error_of(post(server, "/v1/images/generations", body), 400)["param"] == param


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions",
     '{"model": "%s", "messages": [{"role": "user", "content": "what \\ud800 is it?"}]}' % NAME),
    ("/v1/images/generations", '{"prompt": "a red \\udfff circle"}'),
])
def test_a_lone_surrogate_in_text_is_400_not_500(server, path, body):
    """JSON may escape half a UTF-16 pair, which is no text: the tokenizer is never handed it."""
    r = post(server, path, content=body.encode(), headers={"content-type": "application/json"})
    message = error_of(r, 400)["message"]  # (the chat route's is smalto's, the images route's pydantic's)
    assert "UTF-8" in message or "unicode string" in message


def test_unknown_model_route_and_method_are_404_405(server):
    assert error_of(post(server, "/v1/images/generations", {"prompt": "x", "model": "dall-e-3"}), 404)["code"] == \
        "model_not_found"
    error_of(httpx.get(f"{server}/v1/nothing"), 404)
    error_of(httpx.get(f"{server}/v1/chat/completions"), 405)


def test_a_body_over_the_limit_is_413_declared_or_chunked(server):
    big = json.dumps({"model": NAME, "messages": png_in(b"x" * (1 << 20))}).encode()
    assert error_of(post(server, "/v1/chat/completions", content=big), 413)["code"] == "payload_too_large"

    def chunks():
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]
    error_of(post(server, "/v1/chat/completions", content=chunks()), 413)  # no Content-Length: counted


def test_a_transparent_or_odd_image_is_converted_not_refused(server):
    buf = io.BytesIO()
    Image.new("LA", (300, 200), (128, 200)).save(buf, format="PNG")
    r = post(server, "/v1/chat/completions", {"model": NAME, "messages": png_in(buf.getvalue()), "max_tokens": 4})
    assert r.status_code == 200


def test_a_full_queue_answers_503_fast_and_accepted_requests_complete(shipped):
    async def run(url):
        async with httpx.AsyncClient(timeout=60) as http:
            async def one(i):
                t = time.monotonic()
                r = await http.post(f"{url}/v1/images/generations",
                                    json={"prompt": "a small red circle", "n": 4, "seed": i})
                return r, time.monotonic() - t
            return await asyncio.gather(*(one(i) for i in range(12)))

    with running_server(shipped, ServeConfig(model_name=NAME, max_queue=2)) as url:
        results = asyncio.run(run(url))
    codes = sorted(r.status_code for r, _ in results)
    # the queue's two at least; more if the worker took some before the burst filled it
    assert set(codes) == {200, 503} and codes.count(200) >= 2
    busy = [(r, dt) for r, dt in results if r.status_code == 503]
    assert all(r.json()["error"]["code"] == "queue_full" for r, _ in busy)
    assert max(dt for _, dt in busy) < min(dt for r, dt in results if r.status_code == 200) + 0.5
    assert all(len(r.json()["data"]) == 4 for r, _ in results if r.status_code == 200)


def test_a_request_over_its_time_budget_is_504(shipped):
    with running_server(shipped, ServeConfig(model_name=NAME, timeout=0.05)) as url:
        error = error_of(httpx.post(f"{url}/v1/images/generations", json={"prompt": "a red circle", "n": 10},
                                    timeout=30), 504)
        assert error["code"] == "timeout"
        assert httpx.get(f"{url}/health").json()["status"] == "ok"


def test_a_client_leaving_mid_stream_frees_the_server(server):
    with httpx.stream("POST", f"{server}/v1/chat/completions", timeout=30, json={
            "model": NAME, "messages": [{"role": "user", "content": "hello"}], "stream": True, "max_tokens": 60}) as r:
        assert r.status_code == 200
        next(r.iter_lines())  # read one event, then hang up
    for _ in range(100):
        if httpx.get(f"{server}/health").json()["queued"] == 0:
            break
        time.sleep(0.05)
    r = post(server, "/v1/chat/completions", {"model": NAME, "messages": ask(""), "max_tokens": 3})
    assert r.status_code == 200


def test_openapi_describes_the_real_shapes(server):
    schema = httpx.get(f"{server}/openapi.json").json()
    chat = schema["paths"]["/v1/chat/completions"]["post"]
    assert "text/event-stream" in chat["responses"]["200"]["content"]
    assert {"400", "401", "404", "413", "503"} <= set(chat["responses"])
    components = schema["components"]["schemas"]
    assert {"ChatCompletionRequest", "ChatCompletion", "ImageGenerationRequest", "ImagesResponse",
            "ErrorResponse"} <= set(components)
    assert "stream" in components["ChatCompletionRequest"]["properties"]


def test_shutdown_finishes_in_flight_requests(tmp_path):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "smalto", "serve", "--port", str(port), "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url)

        async def during_shutdown():
            async with httpx.AsyncClient(timeout=60) as http:
                pending = asyncio.ensure_future(http.post(f"{url}/v1/images/generations",
                                                          json={"prompt": "a small red circle", "n": 10}))
                await asyncio.sleep(0.3)  # the request is in the worker now
                proc.send_signal(signal.SIGTERM)
                return await pending

        r = asyncio.run(during_shutdown())
        assert r.status_code == 200 and len(r.json()["data"]) == 10
        assert proc.wait(30) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        proc.kill()


def test_a_busy_port_is_a_clear_error():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "smalto", "serve", "--port", str(port), "--log-level", "critical"],
                           capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2 and "Traceback" not in r.stderr and "port in use" in r.stderr, r.stderr


# --- hostile input: guessed paths without a key, decompression bombs, slow decoding

def test_without_the_key_every_v1_path_is_401_before_routing_or_reading_the_body(shipped):
    with running_server(shipped, ServeConfig(model_name=NAME, api_key="sesame", max_body_bytes=1 << 20)) as url:
        refused = [httpx.get(f"{url}/v1/models/"), httpx.get(f"{url}/v1/nothing"), httpx.get(f"{url}/v1"),
                   httpx.delete(f"{url}/v1/models"), httpx.get(f"{url}/v1/chat/completions"),
                   httpx.post(f"{url}/v1/chat/completions", content=b"x" * (2 << 20)),  # over the body limit
                   httpx.get(f"{url}/v1/models", headers={"Authorization": "Basic sesame"}),
                   httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer sesame2"})]
        for r in refused:
            assert error_of(r, 401)["code"] == "invalid_api_key" and r.headers["www-authenticate"] == "Bearer"
        key = {"Authorization": "Bearer sesame"}
        assert error_of(httpx.get(f"{url}/v1/models/", headers=key), 404)["code"] == "not_found"  # no redirect
        error_of(httpx.get(f"{url}/v1/nothing", headers=key), 404)
        error_of(httpx.get(f"{url}/v1/chat/completions", headers=key), 405)
        assert httpx.get(f"{url}/v1/models", headers=key).status_code == 200
        assert httpx.get(f"{url}/health").status_code == 200 and httpx.get(f"{url}/").status_code == 200


def test_static_files_do_not_leave_their_folder(server):
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py", "/static/../../cli.py"):
        r = httpx.get(f"{server}{path}")
        assert r.status_code == 404 and "def " not in r.text, path


def resident_peak_over(fn) -> tuple[float, object]:
    """(MB the process's peak resident memory grew by while fn ran, fn's result); Linux resets the
    peak (VmHWM) on writing 5 to clear_refs."""
    def kb(field):
        return int(next(line for line in open("/proc/self/status") if line.startswith(field)).split()[1])
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = kb("VmRSS")
    result = fn()
    return (kb("VmHWM") - before) / 1024, result


def test_a_12000_square_png_is_400_in_milliseconds_without_decoding_it(server, bomb):
    t = time.perf_counter()
    grown, r = resident_peak_over(lambda: post(server, "/v1/chat/completions",
                                               {"model": NAME, "messages": png_in(bomb)}))
    seconds = time.perf_counter() - t
    error = error_of(r, 400)
    assert error["code"] == "invalid_image" and error["param"] == "messages.0.content.0.image_url"
    assert "12000×12000 pixels, over this server's limit of 16,777,216" in error["message"]
    assert seconds < 0.5 and grown < 32, (seconds, grown)  # decoding it would take 432 MB


def test_the_image_limit_is_configurable(shipped):
    small = {"model": NAME, "messages": png_in(bomb_png(64, 64)), "max_tokens": 2}
    with running_server(shipped, ServeConfig(model_name=NAME, max_image_pixels=64 * 64 - 1)) as url:
        assert error_of(post(url, "/v1/chat/completions", small), 400)["code"] == "invalid_image"
    with running_server(shipped, ServeConfig(model_name=NAME, max_image_pixels=64 * 64)) as url:
        assert post(url, "/v1/chat/completions", small).status_code == 200


def test_more_images_than_the_context_holds_are_refused_before_any_is_decoded(server, monkeypatch):
    import smalto.apps.serve.inputs as app

    decoded = []
    monkeypatch.setattr(app, "load_image", lambda *a, **kw: decoded.append(1))
    parts = [{"type": "image_url", "image_url": {"url": data_url(SAMPLE.image)}}] * 50
    r = post(server, "/v1/chat/completions", {"model": NAME, "messages": [{"role": "user", "content": parts}]})
    assert error_of(r, 400)["code"] == "context_length_exceeded" and "50 images" in r.json()["error"]["message"]
    assert decoded == []


def test_decoding_an_image_does_not_hold_up_other_requests(server, monkeypatch):
    import threading

    import smalto.apps.serve.inputs as app

    real, started = app.load_image, threading.Event()

    def slow(*args, **kwargs):
        started.set()
        time.sleep(2)
        return real(*args, **kwargs)

    monkeypatch.setattr(app, "load_image", slow)
    body = {"model": NAME, "messages": ask("how many circles are there?"), "max_tokens": 2}
    chat = threading.Thread(target=lambda: post(server, "/v1/chat/completions", body))
    chat.start()
    assert started.wait(10)
    t = time.perf_counter()
    assert httpx.get(f"{server}/health", timeout=10).status_code == 200
    assert post(server, "/v1/images/generations", {"prompt": "a red circle", "seed": 1}).status_code == 200
    assert time.perf_counter() - t < 1.5  # answered while the image was still decoding
    chat.join(30)


# --- test-time compute: reasoning_effort

def test_reasoning_effort_thinks_and_reports_its_tokens(client, shipped):
    question = "what color is the square?"
    r = client.chat.completions.create(model=NAME, messages=ask(question), reasoning_effort="medium")
    expected = shipped.reply_batch([SAMPLE.image], [question], effort="medium")[0]
    message = r.choices[0].message
    assert message.content == expected.text and message.reasoning_content == expected.reasoning
    # the solver answered from the model's description, and the reply says so (an extension field)
    assert expected.answered_by == "solver" and message.model_extra["answered_by"] == "solver"
    assert r.usage.completion_tokens_details.reasoning_tokens == expected.reasoning_tokens > 0
    assert r.usage.completion_tokens == expected.tokens
    instant = client.chat.completions.create(model=NAME, messages=ask(question), reasoning_effort="none")
    assert instant.choices[0].message.content == shipped.ask(SAMPLE.image, question)
    assert instant.choices[0].message.model_extra.get("answered_by") is None  # no effort: the plain path


def test_reasoning_streams_before_the_answer(client, shipped):
    question = SAMPLE.qa[0]["q"]
    stream = client.chat.completions.create(model=NAME, messages=ask(question), reasoning_effort="medium",
                                            stream=True, stream_options={"include_usage": True})
    kinds, reasoning, content, usage, who = [], "", "", None, []
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            who += [choice.delta.model_extra["answered_by"]] if choice.delta.model_extra.get("answered_by") else []
            piece = getattr(choice.delta, "reasoning_content", None)
            if piece:
                kinds.append("reasoning")
                reasoning += piece
            if choice.delta.content:
                kinds.append("content")
                content += choice.delta.content
    expected = shipped.reply_batch([SAMPLE.image], [question], effort="medium")[0]
    assert reasoning == expected.reasoning and content == expected.text and who == [expected.answered_by]
    assert kinds.count("reasoning") > 1 and kinds[-1] == "content" and "reasoning" not in kinds[kinds.index("content"):]
    assert usage.completion_tokens_details.reasoning_tokens == expected.reasoning_tokens


def test_images_with_reasoning_effort_are_planned_and_judged(client):
    from smalto.data.shapes import parse_caption
    from smalto.verify.smt import check
    from smalto.verify.spec import parse_prompt

    r = client.images.generate(model=NAME, prompt="a small red circle left of a large blue square", n=2,
                               extra_body={"reasoning_effort": "low", "seed": 3})
    for item in r.data:
        assert item.revised_prompt.startswith("a ") and " at the " in item.revised_prompt
        verdict = item.model_extra["verdict"]
        assert set(verdict) == {"satisfied", "score", "failed"} and 0 <= verdict["score"] <= 1
        assert verdict["satisfied"] == (not verdict["failed"])
        # the reading and the verdict come from the same parse of the pixels
        reading = parse_caption(item.model_extra["reading"])
        assert check(parse_prompt("a small red circle left of a large blue square"), reading).satisfied == \
            verdict["satisfied"]


@pytest.mark.parametrize("body, message", [
    ({"prompt": "a purple banana", "reasoning_effort": "high"}, "'banana'"),
    ({"prompt": "a circle left of a square and the square left of the circle", "reasoning_effort": "low"},
     "no layout satisfies"),
    ({"prompt": "a red circle", "n": 8, "best_of": 64}, "at most 256"),
    ({"prompt": "a red circle", "reasoning_effort": "extreme"}, "reasoning_effort"),
])
def test_bad_effort_requests_are_400(server, body, message):
    error = error_of(post(server, "/v1/images/generations", body), 400)
    assert message in error["message"] and error["param"] in ("prompt", "reasoning_effort")


def test_a_request_over_its_pixel_budget_is_400_before_decoding(shipped):
    """Two pictures each within the per-image limit, together over the request's budget."""
    two = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(SAMPLE.image)}}] * 2}]
    body = {"model": NAME, "messages": two, "max_tokens": 2}
    with running_server(shipped, ServeConfig(model_name=NAME, max_request_pixels=2 * 32 * 32 - 1)) as url:
        error = error_of(post(url, "/v1/chat/completions", body), 400)
        assert error["code"] == "invalid_image" and error["param"] == "messages.0.content.1.image_url"
        assert "2,048 pixels, over this server's budget of 2,047 per request" in error["message"]
    with running_server(shipped, ServeConfig(model_name=NAME, max_request_pixels=2 * 32 * 32)) as url:
        assert post(url, "/v1/chat/completions", body).status_code == 200
