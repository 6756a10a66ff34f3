"""Open the reports in headless Chromium (DevTools protocol over a pipe, no extra packages).

For each report kind: the page loads with no console errors or CSP violations, every figure
decodes (``naturalWidth > 0``), a full-page screenshot is not blank, and the model text carrying
``<script>alert(1)</script>`` and an ``onerror`` handler shows as text and runs nothing — checked
with the page's CSP bypassed, so the escaping alone is under test.

Skips when ``chromium`` is absent, except in CI (``CI`` set), where it must run.
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from report_runs import XSS, report_runs

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists()
                                        else None)
if CHROMIUM is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the browser tests: install chromium (apt-get install -y chromium)")
    pytest.skip("chromium not installed (apt-get install -y chromium); not in CI",
                allow_module_level=True)

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage", "--remote-debugging-pipe", "--window-size=1200,900"]


class Browser:
    """A minimal DevTools-protocol client: NUL-terminated JSON over fds 3 (in) / 4 (out)."""

    def __init__(self, profile: Path) -> None:
        cmd_r, self._cmd_w = os.pipe()
        self._ev_r, ev_w = os.pipe()
        shell = f'exec "$0" "$@" 3<&{cmd_r} 4>&{ev_w}'
        self.proc = subprocess.Popen(
            ["bash", "-c", shell, CHROMIUM, *FLAGS, f"--user-data-dir={profile}"],
            pass_fds=(cmd_r, ev_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(ev_w)
        self._buf, self._id, self.events = b"", 0, []

    def _read(self, timeout: float) -> dict:
        deadline = time.time() + timeout
        while b"\0" not in self._buf:
            left = deadline - time.time()
            if left <= 0 or not select.select([self._ev_r], [], [], left)[0]:
                raise TimeoutError("no message from chromium")
            chunk = os.read(self._ev_r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_event(self, method: str, session: str, timeout: float = 30) -> dict:
        """Wait for ``method``; a JavaScript dialog (``alert``) is recorded and dismissed, since
        it would block the page's load forever."""
        deadline, handled = time.time() + timeout, 0
        while time.time() < deadline:
            dialogs = [e for e in self.events if e.get("method") == "Page.javascriptDialogOpening"]
            for _ in dialogs[handled:]:
                self.send("Page.handleJavaScriptDialog", {"accept": False}, session=session)
            handled = len(dialogs)
            if any(e.get("method") == method for e in self.events):
                return next(e for e in self.events if e.get("method") == method)
            self.events.append(self._read(deadline - time.time()))
        raise TimeoutError(method)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._cmd_w)
        os.close(self._ev_r)

    def open(self, url: str, bypass_csp: bool = False) -> str:
        """Load ``url`` in a new tab; returns the session id once the load event fired."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        if bypass_csp:
            self.send("Page.setBypassCSP", {"enabled": True}, session=session)
        self.events.clear()
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_event("Page.loadEventFired", session)
        return session

    def evaluate(self, expr: str, session: str):
        res = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True},
                        session=session)
        return res["result"].get("value")


PAGE_STATE = """JSON.stringify({
  images: document.images.length,
  decoded: [...document.images].filter(i => i.complete && i.naturalWidth > 0).length,
  figures: document.querySelectorAll('figure.figure').length,
  scripts: document.scripts.length,
  title: document.title,
  pwned: document.title === 'PWNED' || !!document.querySelector('[data-pwned]'),
  text: document.body.innerText.includes(%s),
  height: document.documentElement.scrollHeight})"""


def _errors(events: list[dict]) -> list[dict]:
    bad = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.exceptionThrown" or m == "Page.javascriptDialogOpening":
            bad.append(e)
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            bad.append(e)
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            bad.append(e)
    return bad


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    from opd_diag.report import write_report

    runs = report_runs()
    out = tmp_path_factory.mktemp("html")
    return {
        "preflight": write_report([runs["preflight"]], out / "preflight.html"),
        "training": write_report([runs["train_a"]], out / "training.html"),
        "comparison": write_report([runs["train_a"], runs["train_b"], runs["preflight"]],
                                   out / "comparison.html"),
    }


@pytest.fixture(scope="module")
def browser():
    with tempfile.TemporaryDirectory() as profile:
        b = Browser(Path(profile))
        yield b
        b.close()


def _not_blank(png: bytes) -> float:
    from PIL import Image, ImageStat

    img = Image.open(io.BytesIO(png)).convert("L")
    return ImageStat.Stat(img).stddev[0]


@pytest.mark.parametrize("kind", ["preflight", "training", "comparison"])
def test_report_renders_in_chromium(reports, browser, kind, tmp_path):
    path = reports[kind]
    session = browser.open(path.resolve().as_uri())
    state = json.loads(browser.evaluate(PAGE_STATE % json.dumps(XSS), session))
    assert _errors(browser.events) == [], "console errors / CSP violations / dialogs"
    assert state["images"] >= 2 and state["decoded"] == state["images"] == state["figures"]
    assert state["scripts"] == 0 and not state["pwned"]
    shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                        session=session)
    png = base64.b64decode(shot["data"])
    (tmp_path / f"{kind}.png").write_bytes(png)
    assert len(png) > 10_000 and _not_blank(png) > 10, "blank screenshot"


@pytest.mark.parametrize("kind", ["preflight", "comparison"])
def test_model_text_never_executes_even_without_csp(reports, browser, kind):
    session = browser.open(reports[kind].resolve().as_uri(), bypass_csp=True)
    state = json.loads(browser.evaluate(PAGE_STATE % json.dumps(XSS), session))
    assert not any(e.get("method") == "Page.javascriptDialogOpening" for e in browser.events)
    assert state["scripts"] == 0 and not state["pwned"] and state["title"] != "PWNED"
    assert state["text"], "the payload is shown as text"


OVERFLOW = """JSON.stringify({
  page: document.documentElement.scrollWidth, viewport: window.innerWidth,
  unscrolled: [...document.querySelectorAll('table')].filter(t =>
      !t.closest('.scroll') && t.getBoundingClientRect().right > window.innerWidth).length,
  clipped_cells: [...document.querySelectorAll('td, th')].filter(c =>
      getComputedStyle(c).overflow === 'hidden' && c.scrollWidth > c.clientWidth + 1).length})"""


@pytest.mark.parametrize("kind", ["preflight", "training", "comparison"])
@pytest.mark.parametrize("width", [1200, 800])
def test_wide_tables_scroll_instead_of_overflowing_the_page(reports, browser, kind, width):
    session = browser.open(reports[kind].resolve().as_uri())
    browser.send("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
                 session=session)
    state = json.loads(browser.evaluate(OVERFLOW, session))
    assert state["page"] <= state["viewport"], f"the page scrolls sideways: {state}"
    assert state["unscrolled"] == 0 and state["clipped_cells"] == 0, state
