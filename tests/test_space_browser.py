"""The demo Space in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by Playwright uploads an
image, runs x2 super-resolution and finds the result at the right size. The page's screenshot is kept in
test-artifacts/ (git-ignored) for a person to look at."""

from pathlib import Path

import numpy as np
from conftest import REPO_ROOT, shared_path
from PIL import Image
from playwright.sync_api import sync_playwright
from space_server import space_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = REPO_ROOT / "test-artifacts"
RESULT_TIMEOUT_MS = 120_000


def test_upload_and_super_resolve_x2_in_chromium(tmp_path):
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)"
    server = space_server()
    image = Image.open(shared_path("testsets", "Set5", "LR_bicubic", "X2", "birdx2.png")).convert("RGB")
    image = image.crop((30, 30, 94, 78))  # 64 x 48
    upload = tmp_path / "bird_crop.png"
    image.save(upload)
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(server.url, wait_until="networkidle")
            assert page.get_by_role("radio", name="Super-resolution x2").is_checked()  # the default task
            page.locator("input[type=file]").first.set_input_files(str(upload))
            page.locator("img[alt]").or_(page.locator("[data-testid=image] img")).first.wait_for(timeout=30_000)
            page.get_by_role("button", name="Restore").click()
            # the slider shows two images (before, after) once the result is in, both fully loaded
            page.wait_for_function(
                """() => {
                    const images = document.querySelectorAll('#comparison img');
                    return images.length >= 2 && Array.from(images).every(i => i.complete && i.naturalWidth > 0);
                }""",
                timeout=RESULT_TIMEOUT_MS,
            )
            page.wait_for_selector("#download a", timeout=30_000)
            sizes = page.evaluate(
                "() => Array.from(document.querySelectorAll('#comparison img'))"
                ".map(i => [i.naturalWidth, i.naturalHeight])"
            )
            links = page.evaluate(
                "() => Array.from(document.querySelectorAll('#download a')).map(a => [a.href, a.download])"
            )
            page.screenshot(path=str(ARTIFACTS / "space_sr_x2.png"), full_page=True)
            result_url = links[0][0]
            response = page.request.get(result_url)
            assert response.ok
            (tmp_path / "result.png").write_bytes(response.body())
        finally:
            browser.close()

    assert sizes == [[128, 96], [128, 96]]  # before (bicubic) and after, both twice the 64 x 48 upload
    assert links[0][1].endswith(".png")
    with Image.open(tmp_path / "result.png") as result:
        assert result.format == "PNG" and result.size == (128, 96)
        assert np.asarray(result).std() > 10  # an image, not a blank
    assert (ARTIFACTS / "space_sr_x2.png").stat().st_size > 10_000
