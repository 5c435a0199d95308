"""Screenshots of the app's pages in headless Chromium, from the store the environment names.

    NEURFLOW_CACHE=... .venv/bin/python docs/screenshots/take.py [--out docs/screenshots]
        [--chromium /usr/bin/chromium] [--width 1500] [--full-page] [--only overview,compare]
        [--view NAME=QUERY ...]

Starts `streamlit run` of the app (the same command line as `neurflow app`) on a free port, with
the store of the environment (NEURFLOW_STORE_DIR / NEURFLOW_STORE_URI ..., as every command),
opens each view by its URL query (the app keeps every view's state in the URL), waits until the
run has finished, and writes `<name>.png` into `--out` (palette PNGs, small enough for the
repository).  The default views are the README's four plus the neuron-level circuit and the
faithfulness page; `--view name=page=compare&classes=0,6` adds or replaces one.  It prints the
render time of each view (first visit of a fresh session), so a slow page shows here too.

Exit status 0 when every view rendered without an exception box, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.browser import settle  # noqa: E402

VIEWS = {
    "overview": "page=overview",
    "circuit": "page=circuit&class=0&level=group",
    "circuit-neurons": "page=circuit&class=0&level=neuron",
    "compare": "page=compare&classes=0,6",
    "faithfulness": "page=faithfulness",
    "console": "page=console&q=hub_neurons&run=1",
}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]  # fmt: skip


def start_app(port: int) -> subprocess.Popen:
    from cli.app_commands import app_env, streamlit_command

    log = open(Path(tempfile.gettempdir()) / f"neurflow-screenshots-{port}.log", "wb")
    proc = subprocess.Popen(streamlit_command(port), env=app_env(), cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"streamlit did not start; see {log.name}")
        time.sleep(0.3)


def save(png: Path, dest: Path) -> None:
    try:
        from PIL import Image

        Image.open(png).convert("RGB").quantize(colors=128).save(dest, optimize=True)
    except Exception:  # noqa: BLE001 - a plain copy is fine too
        shutil.copy(png, dest)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--width", type=int, default=1500)
    ap.add_argument("--height", type=int, default=1000)
    ap.add_argument("--full-page", action="store_true", help="the whole page, not the first screen")
    ap.add_argument("--only", default="", help="comma-separated view names")
    ap.add_argument("--view", action="append", default=[], help="NAME=URL-QUERY (adds or replaces a view)")
    args = ap.parse_args(argv)
    views = dict(VIEWS)
    for v in args.view:
        name, _, query = v.partition("=")
        views[name] = query
    if args.only:
        views = {k: q for k, q in views.items() if k in args.only.split(",")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from ingest.store.embedded import free_port
    from playwright.sync_api import sync_playwright

    port = free_port()
    proc = start_app(port)
    ok = True
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            for name, query in views.items():
                page = browser.new_page(viewport={"width": args.width, "height": args.height})
                page.set_default_timeout(120000)
                page.goto(f"http://127.0.0.1:{port}/?{query}")
                seconds = settle(page)
                errors = page.get_by_test_id("stException").count()
                ok &= errors == 0
                if args.full_page:  # Streamlit scrolls inside its main block: grow the window to its height
                    tall = page.evaluate("() => Math.max(...[...document.querySelectorAll('[data-testid=stMain], "
                                         "[data-testid=stAppViewContainer], section')].map(e => e.scrollHeight))")
                    page.set_viewport_size({"width": args.width, "height": min(int(tall) + 40, 12000)})
                    settle(page)
                with tempfile.TemporaryDirectory() as tmp:
                    raw = Path(tmp) / "raw.png"
                    page.screenshot(path=str(raw))
                    save(raw, out / f"{name}.png")
                print(f"{name:18s} {seconds:6.1f} s  {out / (name + '.png')}" + (f"  {errors} EXCEPTION(S)" if errors else ""))
                page.close()
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
