"""End to end: `streamlit run` of the app on the real ingested demo store, driven in headless Chromium.

Opens every page, picks two classes and checks the comparison against the Circuit objects, runs a
library query, and sees a write query refused.  Screenshots go to test-artifacts/; the main pages'
are copied (palette PNGs, small) to docs/screenshots/ when missing or when
NEURFLOW_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from bench.browser import settle as wait_until_settled

pytest.importorskip("streamlit")
playwright = pytest.importorskip("playwright.sync_api")

from cli.app_commands import app_env  # noqa: E402
from tests.app_server import running_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
DOCS_SHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]  # fmt: skip
DOC_PAGES = ("overview", "circuit", "compare", "console")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian chromium")]


@pytest.fixture(scope="module")
def app_url(ingested, ingested_artifacts):
    cfg, _ = ingested
    env = app_env({
        "NEURFLOW_STORE_URI": cfg.uri, "NEURFLOW_STORE_USER": cfg.user or "", "NEURFLOW_STORE_PASSWORD": cfg.password or "",
        "NEURFLOW_STORE_DATABASE": cfg.database or "", "NEURFLOW_ARTIFACT_DIR": str(ingested_artifacts),
        "NEURFLOW_STORE_READONLY_USER": cfg.readonly_user or "", "NEURFLOW_STORE_READONLY_PASSWORD": cfg.readonly_password or "",
    })  # fmt: skip
    with running_app(env, ARTIFACTS / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def settle(page, timeout: float = 30.0) -> None:
    """Wait until Streamlit has finished the run (bench.browser.settle), then: no exception box."""
    wait_until_settled(page, timeout)
    assert page.get_by_test_id("stException").count() == 0, page.get_by_test_id("stException").first.inner_text()


def shot(page, name: str) -> None:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    if name in DOC_PAGES and (os.environ.get("NEURFLOW_UPDATE_SCREENSHOTS") == "1" or not (DOCS_SHOTS / path.name).exists()):
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        try:
            from PIL import Image

            Image.open(path).convert("RGB").quantize(colors=128).save(DOCS_SHOTS / path.name, optimize=True)
        except Exception:  # noqa: BLE001 - a plain copy is fine too
            shutil.copy(path, DOCS_SHOTS / path.name)


def label_overlaps(chart) -> tuple[int, list[str]]:
    """(labels drawn, pairs of labels whose boxes overlap) in a plotly chart, from the rendered SVG."""
    boxes = chart.evaluate("""el => [...el.querySelectorAll('.scatterlayer .textpoint text')]
        .filter(t => t.textContent.trim() !== '')
        .map(t => { const r = t.getBoundingClientRect(); return [t.textContent, r.left, r.top, r.right, r.bottom]; })""")
    bad = []
    for i, (ta, l1, t1, r1, b1) in enumerate(boxes):
        for tb, l2, t2, r2, b2 in boxes[i + 1 :]:
            if min(r1, r2) - max(l1, l2) > 1 and min(b1, b2) - max(t1, t2) > 1:  # more than a pixel of overlap
                bad.append(f"{ta!r} / {tb!r}")
    return len(boxes), bad


def full_width(page, chart) -> float:
    """The chart's drawn width over the width of the page's main block."""
    main_w = page.evaluate("""() => { const el = document.querySelector('[data-testid=stMainBlockContainer]');
        const st = getComputedStyle(el); return el.clientWidth - parseFloat(st.paddingLeft) - parseFloat(st.paddingRight); }""")
    return chart.bounding_box()["width"] / main_w


def glide_cells(page) -> list[str]:
    return page.locator("[data-testid^=glide-cell]").all_inner_texts()


def test_app_in_a_real_browser(app_url, browser, ingested):
    _, circuits = ingested
    t0 = time.monotonic()
    page = browser.new_page(viewport={"width": 1360, "height": 1000})
    page.set_default_timeout(30000)
    main = page.get_by_test_id("stMain")
    sidebar = page.get_by_test_id("stSidebar")

    # ---------------------------------------------------------------- overview: images first
    page.goto(app_url + "/")
    settle(page)
    page.get_by_role("heading", name="Overview").wait_for()
    for c in circuits.values():
        assert main.get_by_text(f"{c.class_index} · {c.class_name}", exact=True).count() == 1
    imgs = main.locator("[data-testid=stImage] img, [data-testid=stImageContainer] img, img")
    assert imgs.count() >= len(circuits)
    assert page.evaluate("() => [...document.querySelectorAll('[data-testid=stMain] img')].every(i => i.complete && i.naturalWidth > 0)")
    shot(page, "overview")

    # ---------------------------------------------------------------- circuit of a class
    main.get_by_role("button", name="Circuit", exact=True).first.click()
    settle(page)
    page.get_by_role("heading", name="Circuit of a class").wait_for()
    assert "page=circuit" in page.url and "class=0" in page.url
    assert main.get_by_test_id("stPlotlyChart").count() >= 1
    assert main.locator(".js-plotly-plot").count() >= 1
    shot(page, "circuit")
    main.get_by_text("Neurons (FEEDS)").click()
    settle(page)
    assert "level=neuron" in page.url
    assert main.get_by_text(re.compile(r"\d+ neurons, \d+ FEEDS edges drawn")).count() == 1
    graph = main.locator(".js-plotly-plot").first
    drawn, overlapping = label_overlaps(graph)
    assert drawn >= 10 and not overlapping, overlapping  # channel labels, none on top of another
    assert full_width(page, graph) > 0.95
    shot(page, "circuit-neurons")

    # ---------------------------------------------------------------- compare: pick two classes
    sidebar.get_by_text("Compare classes").click()
    settle(page)
    chooser = main.get_by_test_id("stMultiSelect").first
    for tag in ("1 · Trouser",):  # the default pair is 0, 1: make it T-shirt/top vs Shirt
        chooser.get_by_role("button", name=re.compile(re.escape(tag))).first.click()
        settle(page)
    chooser.locator("input").click()
    chooser.locator("input").fill("Shirt")
    page.get_by_role("option", name=f"6 · {circuits[6].class_name}").click()
    page.keyboard.press("Escape")
    page.wait_for_url(re.compile(r"classes=0%2C6(&|$)"))  # the rerun with both classes has started
    settle(page)
    assert re.search(r"classes=0%2C6(&|$)", page.url), page.url
    cells = glide_cells(page)
    a, b = circuits[0], circuits[6]
    for d in a.depths:
        if d == 0:
            continue
        name = a.layer_name(d)
        i = cells.index(name)
        row = cells[i : i + 9]  # layer, depth, |A|, |B|, shared, only A, only B, Jaccard, channels
        sa, sb = set(a.critical(d)), set(b.critical(d))
        assert int(row[2]) == len(sa) and int(row[3]) == len(sb) and int(row[4]) == len(sa & sb)
        assert float(row[7]) == pytest.approx(len(sa & sb) / len(sa | sb), abs=1e-4)
    metrics = dict(m.split("\n\n")[:2] for m in main.get_by_test_id("stMetric").all_inner_texts())
    na = {(n.depth, n.channel) for n in a.neurons}
    nb = {(n.depth, n.channel) for n in b.neurons}
    assert int(metrics["neurons shared"]) == len(na & nb)
    assert main.locator(".js-plotly-plot").count() >= 3  # overlap bars, diff circuit, heatmap
    main.get_by_test_id("stPlotlyChart").nth(1).scroll_into_view_if_needed()  # charts are drawn when in view
    diff_graph = main.get_by_test_id("stPlotlyChart").nth(1).locator(".js-plotly-plot")
    drawn, overlapping = label_overlaps(diff_graph)
    assert drawn >= 10 and not overlapping, overlapping
    assert full_width(page, diff_graph) > 0.95
    shot(page, "compare")
    main.get_by_test_id("stPlotlyChart").nth(1).screenshot(path=str(ARTIFACTS / "compare-diff.png"))

    # ---------------------------------------------------------------- console: a library query
    sidebar.get_by_text("Cypher console").click()
    settle(page)
    main.get_by_test_id("stSelectbox").filter(has_text="Query").click()
    page.get_by_role("option", name=re.compile(r"\(shared_neurons\)")).click()
    settle(page)
    main.get_by_role("button", name="Run").click()
    settle(page)
    ok = main.get_by_test_id("stAlert").filter(has_text="rows in")
    assert ok.count() == 1, main.get_by_test_id("stAlert").all_inner_texts()
    assert int(ok.inner_text().split("row")[0].strip().split()[-1]) == len(a.layers)
    assert "run=1" in page.url and "q=shared_neurons" in page.url
    assert main.get_by_role("button", name="Download CSV").count() == 1
    shot(page, "console")

    # ---------------------------------------------------------------- console: a write is refused
    main.get_by_test_id("stSelectbox").filter(has_text="Query").click()
    page.get_by_role("option", name=re.compile("your own Cypher")).click()
    settle(page)
    main.get_by_test_id("stTextArea").locator("textarea").fill("MATCH (n:Neuron) DETACH DELETE n")
    main.get_by_role("button", name="Run").click()
    settle(page)
    refused = main.get_by_test_id("stAlert").filter(has_text="Refused")
    assert refused.count() == 1 and "read-only" in refused.inner_text()
    shot(page, "console-refused")
    page.close()
    assert time.monotonic() - t0 < 90  # the browser part stays well under a minute on a quiet machine
