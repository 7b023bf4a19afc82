"""report.html of a real (small) compress run, opened in headless Debian chromium.

Asserts: no SEVERE console entries, the final accuracy and bytes on disk appear in the page
text as the table formats them, every chart ``<svg>`` has a non-zero box and drawn marks with
a non-zero box, and a screenshot is not blank. Skips only when chromium, chromedriver or
selenium is missing; nothing is downloaded (the driver is the system one).
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from torchshrink.pipeline.recipe import load_recipe
from torchshrink.pipeline.runner import run_recipe

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def browser() -> Any:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.skip(f"headless browser test needs {' and '.join(missing)} (apt chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="ts-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    # structured-50 on digits, shortened: baseline + one prune stage, latency measured
    recipe = load_recipe(
        "structured-50",
        overrides=[
            "train.epochs=1",
            "data_limit=200",
            "profile_repeats=2",
            "stages.0.config.finetune.epochs=1",
        ],
    )
    rec = run_recipe(recipe, tmp_path_factory.mktemp("browser"), show_progress=False)
    assert rec.report_html is not None
    return rec.report_html, json.loads(rec.run_json.read_text())


@pytest.fixture(scope="module")
def page(browser: Any, report: tuple[Path, dict[str, Any]]) -> Any:
    browser.get(report[0].resolve().as_uri())
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1400, min(int(height) + 100, 8000))
    return browser


def test_no_console_errors(page: Any) -> None:
    severe = [e for e in page.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == []
    assert page.title == "structured-50"


def test_key_numbers_in_page_text(page: Any, report: tuple[Path, dict[str, Any]]) -> None:
    from selenium.webdriver.common.by import By

    run = report[1]
    text = page.find_element(By.TAG_NAME, "body").text
    final, base = run["final"], run["baseline"]
    for needle in (
        f"{100 * final['accuracy']:.2f}%",
        f"{final['file_bytes']:,}",
        f"{base['file_bytes']:,}",
        f"{final['params']:,}",
        "Accuracy versus size",
        "Sparsity per layer",
    ):
        assert needle in text, needle


def test_every_chart_renders_marks(page: Any) -> None:
    boxes = page.execute_script(
        """
        return Array.from(document.querySelectorAll('svg')).map(s => {
          const r = s.getBoundingClientRect();
          const marks = Array.from(s.querySelectorAll('.mark')).map(m => m.getBBox())
            .filter(b => b.width > 0 || b.height > 0);
          return [s.getAttribute('aria-label'), r.width, r.height, marks.length];
        });
        """
    )
    labels = [b[0] for b in boxes]
    # two trade-off charts, sparsity per layer, one histogram per hidden / output layer
    assert labels[:3] == ["Accuracy versus size", "Accuracy versus latency", "Sparsity per layer"]
    assert sum(lb.startswith("Weights of ") for lb in labels) == 3
    for label, width, height, marks in boxes:
        assert width > 100 and height > 100, label
        assert marks >= 2, label


def test_screenshot_is_not_blank(page: Any) -> None:
    pil = pytest.importorskip("PIL.Image", reason="Pillow decodes the screenshot")
    img = pil.open(io.BytesIO(page.get_screenshot_as_png())).convert("RGB")
    small = img.resize((img.width // 4, img.height // 4))
    colours = small.getcolors(maxcolors=1 << 20) or []
    assert img.width >= 1000 and img.height >= 1000
    assert len(colours) > 50  # text, bars, lines in several colours on white
    white = max(colours)[0] / (small.width * small.height)
    assert 0.5 < white < 0.99  # mostly page background, but far from empty
