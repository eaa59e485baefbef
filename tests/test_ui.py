"""The web UI, end to end in headless Chromium (Debian's chromium + chromium-driver, driven by selenium):
upload an image, ask, see the streamed reply; drop an image; draw and see the grid; attach a sound."""

import base64
import os
import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from smalto.data import ShapesWorld
from smalto.plots import png_bytes, save_png
from smalto.apps.serve import ServeConfig

from conftest import running_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SAMPLE = ShapesWorld(seed=21)[4]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        pytest.fail("the UI test needs Debian's chromium and chromium-driver: `make test` installs them "
                    "(apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1100,800", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(shipped, browser):
    with running_server(shipped, ServeConfig(model_name="ui-test")) as url:
        browser.get(url)
        WebDriverWait(browser, 20).until(EC.text_to_be_present_in_element((By.ID, "model-name"), "ui-test"))
        yield browser


def wait(driver, seconds=30):
    return WebDriverWait(driver, seconds)


def test_upload_ask_and_see_the_streamed_answer(page, shipped, tmp_path):
    path = tmp_path / "scene.png"
    save_png(path, SAMPLE.image)
    page.find_element(By.ID, "file-input").send_keys(str(path))
    wait(page).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#attachments .chip img"))
    question = SAMPLE.qa[0]["q"]
    box = page.find_element(By.ID, "chat-input")
    box.send_keys("draft", Keys.SHIFT, Keys.ENTER, Keys.NULL)  # Shift+Enter: a new line, nothing sent
    assert box.get_attribute("value") == "draft\n" and not page.find_elements(By.CSS_SELECTOR, ".msg.user")
    box.clear()
    box.send_keys(question, Keys.ENTER)  # Enter sends
    reply = wait(page).until(lambda d: [m for m in d.find_elements(By.CSS_SELECTOR, ".msg.assistant")
                                        if "pending" not in m.get_attribute("class")])
    assert reply[-1].text == shipped.ask(SAMPLE.image, question)
    user = page.find_elements(By.CSS_SELECTOR, ".msg.user")[-1]
    assert question in user.text and user.find_elements(By.TAG_NAME, "img")  # the image is shown inline


def test_dropping_an_image_attaches_it_and_a_caption_follows(page, shipped):
    image = ShapesWorld(seed=22)[1].image
    b64 = base64.b64encode(png_bytes(image)).decode()
    page.execute_script("""
        const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
        const target = document.getElementById("chat");
        for (const type of ["dragenter", "dragover", "drop"])
          target.dispatchEvent(new DragEvent(type, { dataTransfer: data, bubbles: true, cancelable: true }));
    """, b64)
    wait(page).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#attachments .chip img"))
    assert page.find_element(By.ID, "drop").get_attribute("hidden") is not None  # the overlay went away
    before = len(page.find_elements(By.CSS_SELECTOR, ".msg.assistant"))
    page.find_element(By.ID, "send").click()  # an image alone asks for a caption
    wait(page).until(lambda d: len([m for m in d.find_elements(By.CSS_SELECTOR, ".msg.assistant")
                                    if "pending" not in m.get_attribute("class")]) > before)
    # the model reads one image per conversation: a second image starts a new one, so this is its caption
    assert page.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1].text == shipped.caption(image)
    assert page.find_elements(By.CSS_SELECTOR, ".divider")


def test_draw_mode_shows_a_grid_with_downloads(page, tmp_path):
    page.find_element(By.ID, "mode-draw").click()
    assert page.find_element(By.ID, "chat").get_attribute("hidden") is not None
    for field, value in (("draw-n", "3"), ("draw-seed", "5"), ("draw-guidance", "1.5")):
        box = page.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    page.find_element(By.ID, "draw-prompt").send_keys("a small red circle at the center", Keys.ENTER)
    cards = wait(page).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".result"))
    assert len(cards) == 3
    for card in cards:
        img = card.find_element(By.TAG_NAME, "img")
        assert page.execute_script("return arguments[0].naturalWidth", img) == 32
        link = card.find_element(By.TAG_NAME, "a")
        assert link.get_attribute("download").endswith(".png")
        assert link.get_attribute("href").startswith("data:image/png")
        assert card.find_element(By.CLASS_NAME, "reading").text.startswith("reads: ")  # what came out
    # SMALTO_UI_SCREENSHOTS=docs keeps the pictures in docs/ (how docs/ui-*.png are made)
    shots = Path(os.environ.get("SMALTO_UI_SCREENSHOTS") or tmp_path)
    page.save_screenshot(str(shots / "ui-draw.png"))
    page.find_element(By.ID, "mode-chat").click()
    page.save_screenshot(str(shots / "ui-chat.png"))
    assert all((shots / f"ui-{name}.png").stat().st_size > 10_000 for name in ("draw", "chat"))


def test_effort_shows_the_thinking_collapsed_and_verdicts_under_drawings(page, shipped, tmp_path):
    from selenium.webdriver.support.ui import Select

    page.find_element(By.ID, "new-chat").click()
    path = tmp_path / "scene.png"
    save_png(path, SAMPLE.image)
    page.find_element(By.ID, "file-input").send_keys(str(path))
    wait(page).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#attachments .chip img"))
    Select(page.find_element(By.ID, "chat-effort")).select_by_value("medium")
    page.find_element(By.ID, "chat-input").send_keys("what color is the square?", Keys.ENTER)
    reply = wait(page).until(lambda d: [m for m in d.find_elements(By.CSS_SELECTOR, ".msg.assistant")
                                        if "pending" not in m.get_attribute("class")])[-1]
    expected = shipped.reply_batch([SAMPLE.image], ["what color is the square?"], effort="medium")[0]
    thinking = reply.find_element(By.CSS_SELECTOR, "details.thinking")
    assert thinking.get_attribute("open") is None  # collapsed
    assert page.execute_script("return arguments[0].lastChild.textContent", thinking) == expected.reasoning
    assert reply.find_element(By.TAG_NAME, "span").text == expected.text
    who = reply.find_element(By.CSS_SELECTOR, ".answered-by").text
    assert who.startswith(f"answered by the {expected.answered_by}")
    Select(page.find_element(By.ID, "chat-effort")).select_by_value("none")

    page.find_element(By.ID, "mode-draw").click()
    Select(page.find_element(By.ID, "draw-effort")).select_by_value("low")
    box = page.find_element(By.ID, "draw-prompt")
    box.clear()
    box.send_keys("a small red circle left of a large blue square", Keys.ENTER)
    wait(page).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".result .verdict"))
    verdicts = page.find_elements(By.CSS_SELECTOR, ".result .verdict")
    assert verdicts and all(v.text.startswith(("✓", "✗")) for v in verdicts)
    Select(page.find_element(By.ID, "draw-effort")).select_by_value("none")
    page.find_element(By.ID, "mode-chat").click()


def test_a_model_that_reads_clips_draws_them_and_the_page_plays_them(browser, micro_clips, tmp_path):
    import smalto
    from smalto.data.motion import MotionWorld
    from smalto.data.video import save_clip

    with running_server(smalto.load(micro_clips), ServeConfig(model_name="clip-test")) as url:
        browser.get(url)
        wait(browser).until(EC.text_to_be_present_in_element((By.ID, "model-name"), "clip-test"))
        clip = tmp_path / "clip.gif"
        save_clip(MotionWorld(seed=3)[0].frames, clip)
        browser.find_element(By.ID, "file-input").send_keys(str(clip))  # a clip attaches like an image
        wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#attachments .chip img"))
        browser.find_element(By.ID, "chat-input").send_keys("how many objects move?", Keys.ENTER)
        wait(browser, 60).until(lambda d: [m for m in d.find_elements(By.CSS_SELECTOR, ".msg.assistant")
                                           if "pending" not in m.get_attribute("class")])
        assert not browser.find_element(By.ID, "record").is_displayed(), "a model that never heard: no microphone"
        browser.find_element(By.ID, "mode-draw").click()
        assert browser.find_element(By.ID, "draw-clip-label").is_displayed()
        assert not browser.find_element(By.ID, "draw-sound-label").is_displayed()
        browser.find_element(By.ID, "draw-clip").click()
        n = browser.find_element(By.ID, "draw-n")
        n.clear()
        n.send_keys("2")
        browser.find_element(By.ID, "draw-prompt").send_keys("a large blue square stays at the center", Keys.ENTER)
        cards = wait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".result"))
        assert len(cards) == 2
        link = cards[0].find_element(By.TAG_NAME, "a")
        assert link.get_attribute("href").startswith("data:image/gif")
        assert link.get_attribute("download").endswith(".gif")


def test_a_model_that_hears_takes_a_sound_and_the_page_plays_it(browser, tmp_path):
    from smalto.data.sounds import SoundConfig, SoundWorld, write_wav
    from smalto.pipeline import Message

    from test_sound_serve import hearing_pipeline

    pipe, path = hearing_pipeline(), tmp_path / "scene.wav"
    write_wav(path, SoundWorld(SoundConfig(), 3, "train")[1].wave, 16000)
    with running_server(pipe, ServeConfig(model_name="sound-test")) as url:
        browser.get(url)
        wait(browser).until(EC.text_to_be_present_in_element((By.ID, "model-name"), "sound-test"))
        browser.find_element(By.ID, "file-input").send_keys(str(path))
        wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#attachments .chip audio"))
        browser.find_element(By.ID, "chat-input").send_keys("how many circles are there?", Keys.ENTER)
        reply = wait(browser, 60).until(lambda d: [m for m in d.find_elements(By.CSS_SELECTOR, ".msg.assistant")
                                                   if "pending" not in m.get_attribute("class")])
        assert reply[-1].text == pipe.chat([Message("user", "how many circles are there?", images=[path])])
        assert browser.find_elements(By.CSS_SELECTOR, ".msg.user audio"), "the sound plays in the conversation"


def test_a_recording_from_the_microphone_is_heard_and_sounds_are_made_in_draw_mode(tmp_path):
    """Chromium's fake microphone plays a ShapesWorld sound; the page records it (stopping by itself
    at the longest sound the model hears), attaches it, and the model hears it; Draw makes sounds
    through /v1/audio/speech and says what the verifier hears in each."""
    import io

    import numpy as np
    import soundfile

    from smalto.data.sounds import SoundConfig, SoundWorld, write_wav
    from smalto.pipeline import Message

    from test_sound_serve import hearing_pipeline

    heard = tmp_path / "microphone.wav"
    write_wav(heard, np.tile(SoundWorld(SoundConfig(), 3, "train")[1].wave, 3), 16000)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={heard}", "--autoplay-policy=no-user-gesture-required",
                 f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    pipe = hearing_pipeline()
    try:
        with running_server(pipe, ServeConfig(model_name="sound-test")) as url:
            driver.get(url)
            wait(driver).until(EC.text_to_be_present_in_element((By.ID, "model-name"), "sound-test"))
            driver.find_element(By.ID, "record").click()
            wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#attachments .chip audio"))
            assert "recording" not in driver.find_element(By.ID, "record").get_attribute("class"), "it stopped itself"
            recorded = base64.b64decode(driver.execute_script("return state.attachments[0].audio.split(',')[1]"))
            wave, rate = soundfile.read(io.BytesIO(recorded), dtype="float32")
            assert rate == 16000 and len(wave) == 21600, "the longest sound the model hears, 1.35 s"
            assert np.sqrt(np.mean(wave ** 2)) > 0.02, "the microphone's sound, not silence"
            driver.find_element(By.ID, "chat-input").send_keys("how many circles are there?", Keys.ENTER)
            reply = wait(driver, 60).until(lambda d: [m for m in d.find_elements(By.CSS_SELECTOR, ".msg.assistant")
                                                      if "pending" not in m.get_attribute("class")])
            assert reply[-1].text == pipe.chat([Message("user", "how many circles are there?", images=[recorded])])

            driver.find_element(By.ID, "mode-draw").click()
            driver.find_element(By.ID, "draw-sound").click()
            for field, value in (("draw-n", "2"), ("draw-seed", "4")):
                box = driver.find_element(By.ID, field)
                box.clear()
                box.send_keys(value)
            said = "a small red circle at the center"
            driver.find_element(By.ID, "draw-prompt").send_keys(said, Keys.ENTER)
            cards = wait(driver, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".sound-result")) == 2
                                           and d.find_elements(By.CSS_SELECTOR, ".sound-result"))
            for i, card in enumerate(cards):
                made = pipe.drawings(said, 1, None, None, 4 + i, "audio")[0]
                assert card.find_element(By.CSS_SELECTOR, ".reading").text == f"hears: {made.reading}"
                assert card.find_element(By.TAG_NAME, "a").get_attribute("download").endswith(f"-seed{4 + i}.wav")
                assert card.find_elements(By.TAG_NAME, "audio")
    finally:
        driver.quit()
