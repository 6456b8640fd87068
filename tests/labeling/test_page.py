"""The labeling page in a real browser (Debian's headless Chromium): ten pairs judged with the mouse, ten with the
keyboard, an undo, a model response that is a <script> shown as text, a phone-width layout, and the screenshot
the README shows (docs/labeling.png)."""

from pathlib import Path

from labeling_util import make_db
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from alignpipe.labeling.db import display_order
from alignpipe.labeling.server import PageServer

DOCS = Path(__file__).resolve().parents[2] / "docs"
XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
SHOWCASE = 11
CHAT = [{"role": "system", "content": "You write short product reviews."},
        {"role": "user", "content": "Review the Aurora wireless headphones."}]
GOOD = ("Great headphones. The sound is warm and clear, the battery easily lasts a week of commuting, and they "
        "fold flat into a small case. Comfortable for hours.")
MEH = "They are headphones. Sound ok. Battery ok. I guess I would buy them again maybe, not sure, the case is big."


def pairs_db(path):
    prompts, responses = {0: "Say something nice.", SHOWCASE: CHAT}, {0: (XSS, "A kind sentence."),
                                                                       SHOWCASE: (GOOD, MEH)}
    return make_db(path, n=24, prompts=prompts, responses=responses,
                   guidelines="Pick the response a customer would find more helpful: accurate, specific, kind.\n"
                              "Use Tie when neither is better, Skip when you cannot tell.")


def on_screen(browser):
    return browser.find_element(By.ID, "task").get_attribute("data-pair")


def next_after(browser, key):
    WebDriverWait(browser, 10).until(lambda b: on_screen(b) != key and on_screen(b))
    return on_screen(browser)


def test_label_with_mouse_and_keyboard_undo_and_escaping(chromium, tmp_path):
    db = pairs_db(tmp_path / "labels.db")
    with PageServer(db) as server:
        chromium.get(f"{server.url}login?t={db.invite('alice')}")
        WebDriverWait(chromium, 10).until(lambda b: on_screen(b))
        assert chromium.find_element(By.ID, "guidelines-text").text.startswith("Pick the response")

        # a response that is markup shows as its characters; nothing of it runs
        key = on_screen(chromium)
        assert key == "0:0:1"
        shown = chromium.find_element(By.ID, "left-text").text + chromium.find_element(By.ID, "right-text").text
        assert XSS in shown
        assert chromium.execute_script("return window.__xss === undefined && !document.querySelector('.text *')")

        # ten with the mouse (one with a reason)
        expected = {}
        buttons = ["choose-left", "choose-right", "choose-tie", "choose-skip"]
        for i in range(10):
            if i == 3:
                chromium.find_element(By.ID, "reason").send_keys("too vague")
            chromium.find_element(By.ID, buttons[i % 4]).click()
            expected[key] = ["left", "right", "tie", "skip"][i % 4]
            key = next_after(chromium, key)
        assert key == f"{10}:0:1"
        chromium.find_element(By.ID, "choose-left").click()
        expected[key] = "left"
        key = next_after(chromium, key)
        assert key == f"{SHOWCASE}:0:1"
        chromium.screenshot(DOCS / "labeling.png", 1280, 800)

        # ten with the keyboard: 1/2/3, arrows, space
        body = chromium.find_element(By.TAG_NAME, "body")
        strokes = [("1", "left"), ("2", "right"), ("3", "tie"), (Keys.ARROW_LEFT, "left"),
                   (Keys.ARROW_RIGHT, "right"), (Keys.SPACE, "skip")]
        for i in range(10):
            stroke, choice = strokes[i % len(strokes)]
            body.send_keys(stroke)
            expected[key] = choice
            key = next_after(chromium, key)

        # undo the last one: it comes back on screen and is gone from the store
        last = max(expected, key=lambda k: int(k.split(":")[0]))
        body.send_keys("u")
        WebDriverWait(chromium, 10).until(lambda b: on_screen(b) == last)
        del expected[last]
        assert "undone" in chromium.find_element(By.ID, "status").text

        stored = {j["pair"]: j for j in db.judgments()}
        assert len(stored) == len(expected) == 20
        for pair, position in expected.items():
            j = stored[pair]
            assert j["annotator"] == "alice" and j["shown"] == display_order(0, pair, "alice")
            assert j["choice"] == {"left": j["shown"][0], "right": j["shown"][1]}.get(position, position)
        assert stored["3:0:1"]["reason"] == "too vague"
        skips = sum(v == "skip" for v in expected.values())
        assert f"you: {20 - skips} judged, {skips} skipped" in chromium.find_element(By.ID, "progress").text

        # phone width: the two responses stack, the buttons stay in view
        chromium.set_window_size(390, 844)
        left = chromium.find_element(By.ID, "left-text").rect
        right = chromium.find_element(By.ID, "right-text").rect
        assert right["y"] > left["y"] + left["height"] - 1 and abs(left["x"] - right["x"]) < 2
        assert chromium.find_element(By.ID, "choose-skip").rect["x"] + 10 < 390
        chromium.screenshot(tmp_path / "phone.png")

        assert chromium.console_errors() == []
        assert all(u.startswith(server.url) for u in chromium.requests())  # nothing from a CDN or elsewhere
