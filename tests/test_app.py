"""The colourise-with-clicks page (python -m gancolor.app), driven in headless Chromium.

Marked `browser`: it needs Debian's chromium and chromium-driver and selenium
(apt-get install -y chromium chromium-driver; pip install -e ".[dev]"). It is not
skipped without them: CI installs them (.ci/run), and a test that passes because
nothing could run it would say nothing. Deselect it with -m "not browser".
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import halves, trained_hints_model
from PIL import Image

from gancolor import color

pytestmark = pytest.mark.browser

# README's screenshot; rewritten only when asked (GANCOLOR_UPDATE_SCREENSHOT=1 pytest -m browser),
# so that a test run leaves the checkout as it was.
README_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "app.png"
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
HINT_AB = np.array([20.0, 60.0])  # a saturated yellow-orange


def browser():
    """Headless Chromium under selenium, the system's own (never a download)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail('selenium is missing: pip install -e ".[dev]"')
    binary = next((b for b in CHROMIUM if Path(b).is_file()), None) or shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.fail("the browser test needs Chromium and its driver: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=900,640"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver_path), options=options)


def lab(rgb_uint8: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) Lab (L 0-100, ab in Lab units)."""
    rgb = color.uint8_to_float(torch.from_numpy(np.array(rgb_uint8)).permute(2, 0, 1)[None])
    L, ab = color.rgb_to_lab_normalized(rgb)
    return torch.cat([(L + 1) * color.L_SCALE, ab * color.AB_SCALE], 1)[0].numpy()


def test_a_click_colours_the_photo_in_a_real_browser(tmp_path, one_thread):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from gancolor.app import load_app, make_server

    _, ckpt = trained_hints_model(tmp_path / "hints.pt", steps=40)
    height, width = 150, 226  # an odd width: the click must land on the right pixel all the same
    gray = color.float_to_uint8(halves(np.random.default_rng(3), 1, height, width, ab=np.zeros((1, 2, 2))))[0, 0].numpy()
    photo = tmp_path / "gray photo.png"
    Image.fromarray(gray).save(photo)

    workdir = tmp_path / "app"
    workdir.mkdir()
    app = load_app(ckpt, workdir, device="cpu")
    server = make_server(app, "127.0.0.1", 0)
    assert server.server_address[0] == "127.0.0.1"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    driver = browser()
    try:
        driver.get(f"http://127.0.0.1:{server.server_address[1]}/")
        wait = WebDriverWait(driver, 30)

        # A file that is no image: refused, on the page.
        (tmp_path / "notes.jpg").write_bytes(b"not a photo")
        driver.find_element(By.ID, "file").send_keys(str(tmp_path / "notes.jpg"))
        wait.until(lambda d: "cannot read notes.jpg" in d.find_element(By.ID, "message").text)
        assert "error" in driver.find_element(By.ID, "message").get_attribute("class")

        driver.find_element(By.ID, "file").send_keys(str(photo))
        result = driver.find_element(By.ID, "result")
        wait.until(lambda d: result.get_attribute("data-rendered") == "0")  # the automatic result, at once
        automatic = downloaded(driver)

        # One click of a saturated colour, a quarter of the way across (the left half).
        hint_rgb = color.float_to_uint8(halves(None, 1, 1, 2, ab=np.tile(HINT_AB[:, None], (1, 1, 2))))[0, :, 0, 0].tolist()
        driver.execute_script("document.getElementById('colour').value = arguments[0]", "#%02x%02x%02x" % tuple(hint_rgb))
        box = result.rect
        dx, dy = box["width"] * (0.25 - 0.5), box["height"] * (0.5 - 0.5)  # offsets from the image's centre
        ActionChains(driver).move_to_element_with_offset(result, int(dx), int(dy)).click().perform()
        wait.until(lambda d: result.get_attribute("data-rendered") == "1")
        hinted = downloaded(driver)
        shot = README_SCREENSHOT if os.environ.get("GANCOLOR_UPDATE_SCREENSHOT") == "1" else tmp_path / "app.png"
        Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB").quantize(64).save(shot, optimize=True)
        assert Image.open(shot).size[0] > 300  # the page rendered, not an empty window
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
        app.colorizer.close()

    assert automatic.shape == hinted.shape == (height, width, 3)  # full resolution
    photo_L = lab(np.repeat(gray[..., None], 3, axis=2))[0]
    x, y = int(width * 0.25), int(height * 0.5)
    near = (slice(y - 8, y + 8), slice(x - 8, x + 8))
    before, after = lab(automatic), lab(hinted)
    assert np.abs(after[0] - photo_L).max() < 2.0  # the photo's own lightness
    distance = [np.linalg.norm(image[1:, near[0], near[1]].mean((1, 2)) - HINT_AB) for image in (before, after)]
    assert distance[1] < 0.7 * distance[0], distance
    assert not any(workdir.iterdir())  # uploads are decoded and removed: nothing is left behind


def downloaded(driver) -> np.ndarray:
    """What the page's download link holds, decoded: (H, W, 3) uint8."""
    data_url = driver.execute_async_script(
        """const done = arguments[arguments.length - 1];
        fetch(document.getElementById('download').href).then((r) => r.blob()).then((blob) => {
          const reader = new FileReader(); reader.onload = () => done(reader.result); reader.readAsDataURL(blob); });"""
    )
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))
