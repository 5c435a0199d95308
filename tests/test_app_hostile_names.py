"""Every name is text, in a real browser (issue 22): a store whose class names, model uid and name,
group label and data folder are Markdown, HTML, LaTeX, Streamlit directives, shortcodes and bare
URLs pointing at a local tracking server; `streamlit run` of the app on it, every page walked in
headless Chromium (links with hostile values too).  The tracking server must see no request, each
name must read literally in the page, no link, image or formula may come from data, and no server
path (store, artifact or data folder) may show.  Screenshots of the overview and compare pages go
to test-artifacts/hostile-*.png."""

from __future__ import annotations

import http.server
import os
import threading
import time
import urllib.parse
import urllib.request
import uuid

import pytest

pytest.importorskip("streamlit")
playwright = pytest.importorskip("playwright.sync_api")

from cli.app_commands import app_env  # noqa: E402
from tests.app_server import running_app  # noqa: E402
from ingest.store.embedded import create_database, drop_database  # noqa: E402
from ingest.jobs.labelling import set_manual_label  # noqa: E402
from ingest.store.schema import ensure_schema  # noqa: E402
from ingest.store.connection import Store  # noqa: E402
from ingest.write.writer import write_circuit  # noqa: E402
from tests.fixtures_store import make_circuit, model_info  # noqa: E402
from tests.test_app_browser import ARTIFACTS, CHROMIUM, browser, settle  # noqa: E402, F401 - browser: the fixture
from tests.test_app_pages import LAYERS, _thumb  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian chromium")]


class Tracker:
    """A local HTTP server that records every request (a page that fetches a URL from data hits it)."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        hits = self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                hits.append(self.path)
                self.send_response(204)
                self.end_headers()

            do_POST = do_HEAD = do_GET  # noqa: N815

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"


@pytest.fixture(scope="module")
def tracker():
    t = Tracker()
    yield t
    t.server.shutdown()


@pytest.fixture(scope="module")
def hostile(store_server, tracker, tmp_path_factory):
    """(names by role, artifact folder, app URL): four classes with hostile names, a hostile model."""
    t = tracker.url
    names = {
        "classes": {0: f"![t]({t('track.png')})", 1: "**bold** :red[red] $x^2$", 2: f"[x]({t('x')}) <img src={t('img.png')}>",
                    3: f"{t('bare')} www.example.com a@b.co :material/home: :smile: :streamlit:"},
        "model": f"net![m]({t('model.png')})*em*",
        "label": f"![l]({t('label.png')}) **label**",
    }  # fmt: skip
    model = names["model"]
    database = "hostile_" + uuid.uuid4().hex[:8]
    create_database(store_server, database)
    artifacts = tmp_path_factory.mktemp("hostile-artifacts")
    circuits = {c: make_circuit(c, model=model, layers=LAYERS, class_name=n) for c, n in names["classes"].items()}
    info = {**model_info(model), "name": f"![n]({t('name.png')})", "num_classes": LAYERS[0][1]}
    with Store(store_server.with_database(database)) as store:
        ensure_schema(store)
        for c in circuits.values():
            write_circuit(store, c, artifacts, thumbnails=_thumb, model_info=info)
        assert set_manual_label(store, f"{circuits[1].uid}/layer3/g0", names["label"]) == 1
        # class 3's thumbnails are gone: its card says so without naming the folder
        for row in store.run("MATCH (:Class {index: 3})-[:HAS_CIRCUIT]->(:Circuit)-[:HAS_CONCEPT]->(:Concept {depth: 0})"
                             "-[:EXEMPLIFIED_BY]->(cr:Crop) RETURN cr.thumbnail AS t"):  # fmt: skip
            (artifacts / row["t"]).unlink(missing_ok=True)
    env = app_env({"NEURFLOW_STORE_DATABASE": database, "NEURFLOW_ARTIFACT_DIR": str(artifacts)})
    for k in ("NEURFLOW_STORE_URI", "NEURFLOW_APP_LABEL_EDITS"):
        env.pop(k, None)
    try:
        with running_app(env, ARTIFACTS / "streamlit-hostile.log") as url:
            yield names, artifacts, url, store_server.data_dir
    finally:
        drop_database(store_server, database)


# the page's text as a visitor reads it: the DOM's text, the values of inputs, the text drawn in charts
PAGE_TEXT = """() => {
  const app = document.querySelector('[data-testid=stApp]');
  const inputs = [...app.querySelectorAll('input, textarea')].map(i => i.value);
  const svg = [...app.querySelectorAll('.js-plotly-plot text')].map(t => t.textContent);
  const cells = [...app.querySelectorAll('[data-testid^=glide-cell]')].map(c => c.textContent);  // tables: a canvas
  return [app.innerText, ...inputs, ...svg, ...cells].join('\\n');
}"""
# elements that only markup can make: links or images to the tracker, formulas, bold "bold", icons
MARKUP = """(port) => {
  const app = document.querySelector('[data-testid=stApp]');
  const bad = [];
  for (const a of app.querySelectorAll('a[href]')) if (a.href.includes(':' + port) || /example\\.com|mailto:/.test(a.href)) bad.push('a ' + a.href);
  for (const i of app.querySelectorAll('img')) if (i.src.includes(':' + port) || (i.alt || '').includes('Streamlit logo')) bad.push('img ' + i.src.slice(0, 80));
  for (const k of app.querySelectorAll('.katex, math')) bad.push('formula ' + k.textContent);
  for (const s of app.querySelectorAll('strong, em, b, i')) if (['bold', 'label', 'em'].includes(s.textContent.trim())) bad.push('emphasis ' + s.textContent);
  for (const s of app.querySelectorAll('span')) if (s.style.color && s.textContent.trim() === 'red') bad.push('colour ' + s.textContent);
  return bad;
}"""


def test_hostile_names_read_as_text_on_every_page(hostile, tracker, browser):
    names, artifacts, url, store_dir = hostile
    classes, model = names["classes"], names["model"]
    t0 = time.monotonic()
    page = browser.new_page(viewport={"width": 1360, "height": 1000})
    page.set_default_timeout(30000)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    seen: dict[str, str] = {}

    def visit(name: str, wait: str | None = None, charts: bool = False, **query: object) -> str:
        page.goto(url + "/?" + urllib.parse.urlencode({"model": model, **query}))
        settle(page)
        if wait:
            page.get_by_text(wait, exact=False).first.wait_for()
        if charts:
            page.mouse.wheel(0, 4000)  # charts are drawn when in view
            page.wait_for_timeout(300)
        text = page.evaluate(PAGE_TEXT)
        assert not page.evaluate(MARKUP, tracker.port), (name, page.evaluate(MARKUP, tracker.port))
        for folder in (str(artifacts), str(store_dir), "/data/"):
            assert folder not in text, (name, folder)  # no server path for visitors
        seen[name] = text
        return text

    text = visit("overview", page="overview")
    for c, n in classes.items():
        assert f"{c} · {n}" in text, (c, n)  # the class cards
    assert f"Classes of {model}" in text and "thumbnails not found in the artifact folder" in text
    assert "data folder " in text  # the parameter set's data folder, by its name
    page.screenshot(path=str(ARTIFACTS / "hostile-overview.png"), full_page=True)

    text = visit("circuit", charts=True, page="circuit", **{"class": 1, "level": "group", "group": "layer3/g0", "w": 0, "k": 64})
    assert f"Label: {names['label']}" in text and f"1 · {classes[1]}" in text
    text = visit("circuit-neurons", page="circuit", **{"class": 2, "level": "neuron", "w": 0, "k": 64})
    assert "Critical for" in text
    assert any(f"{c} · {n}" in text for c, n in classes.items())  # the classes the neuron is critical for

    text = visit("compare", charts=True, page="compare", classes="0,1,2,3", a=0, b=3, layer="layer2")
    assert f"A = 0 · {classes[0]} (blue), B = 3 · {classes[3]} (orange)" in text  # the diff caption
    for c, n in classes.items():
        assert f"{c} · {n}" in text  # heatmap axes, class picker
    page.screenshot(path=str(ARTIFACTS / "hostile-compare.png"), full_page=True)
    charts = page.get_by_test_id("stMain").get_by_test_id("stPlotlyChart")
    charts.nth(charts.count() - 1).screenshot(path=str(ARTIFACTS / "hostile-compare-heatmap.png"))
    page.get_by_text("(blue), B = 3", exact=False).screenshot(path=str(ARTIFACTS / "hostile-compare-diff-caption.png"))
    buttons = page.get_by_test_id("stMain").get_by_role("button").all_inner_texts()
    assert {f"Circuit of {n}" for n in classes.values()} & set(buttons), buttons  # reverse lookup buttons

    query = f"![q]({tracker.url('q.png')}) **q**"  # a link's values are text too
    bad = f"![c]({tracker.url('c.png')})"
    text = visit("compare-link", page="compare", view="similarity", hm_q=query, layer=bad, classes="0,1")
    assert f"No class name contains {query!r}." in text
    assert f"layer={bad!r}" in text  # the link's value it could not use

    text = visit("console", page="console", q="custom", cy_custom="MATCH (cl:Class)-[r:HAS_CIRCUIT]->(c:Circuit) RETURN cl, r, c")
    page.get_by_role("button", name="Run").click()
    settle(page)
    page.get_by_role("tab", name="Graph").click()
    page.wait_for_timeout(500)
    assert not page.evaluate(MARKUP, tracker.port)
    svg = page.evaluate("() => [...document.querySelectorAll('.js-plotly-plot text')].map(t => t.textContent).join('\\n')")
    assert classes[1] in svg  # the Class nodes' names, drawn as text
    text = visit("faithfulness", page="faithfulness")
    assert f"No evaluations of {model} in the store yet" in text
    text = visit("debug", page="debug", wait="a model this installation does not know")  # after torch's import
    assert f"{model} was built by ![n]({tracker.url('name.png')}), a model this installation does not know" in text
    text = visit("labels", page="labels", allm=1)
    assert classes[1] in text  # the search table's row of the labelled group (a table: plain text)
    page.close()
    time.sleep(0.5)
    assert tracker.hits == [], tracker.hits  # no page made the browser fetch a URL from data
    assert not [r for r in requests if f":{tracker.port}" in r]
    assert time.monotonic() - t0 < 120
