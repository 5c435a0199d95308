"""Driving the app in headless Chromium: wait until a Streamlit run has finished.

Shared by the browser test (tests/test_app_browser.py) and the screenshot script
(docs/screenshots/take.py), which both need to know when a page is done drawing: Streamlit
gives no event for it, so this waits for a heading, then for no skeleton / running widget /
spinner and a DOM whose size stays the same for half a second.
"""

from __future__ import annotations

import time


def settle(page, timeout: float = 60.0) -> float:
    """Wait until Streamlit finished the run; returns the seconds it took (without the final
    half-second of stability)."""
    t0 = time.monotonic()
    page.wait_for_selector("[data-testid=stMain] [data-testid=stHeading]", timeout=timeout * 1000)
    last, same = None, 0
    while time.monotonic() - t0 < timeout:
        busy = page.evaluate(
            "() => !!document.querySelector('[data-testid=stSkeleton], [data-testid=stStatusWidget], "
            "[data-testid=stSpinner]')"
        )
        n = page.evaluate("() => document.querySelectorAll('*').length")
        if not busy and n == last:
            same += 1
            if same >= 2:
                break
        else:
            same = 0
        last = n
        page.wait_for_timeout(250)
    return time.monotonic() - t0 - 0.5
