"""Render a page in headless Chromium (Debian's ``chromium``, /usr/bin/chromium) through the
DevTools protocol, and report what a person would get: console errors, uncaught exceptions, every
request the page made, and the values of a JavaScript expression evaluated in the loaded page.

scripts/test.sh installs the ``chromium`` package when it is missing (as root); without it the
tests that need it fail with that message, they are not skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from websockets.sync.client import connect

CHROMIUM = os.environ.get("RPJ_CHROMIUM", "/usr/bin/chromium")


@dataclass
class Rendered:
    url: str
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    value: Any = None  # the result of the expression


class _Session:
    def __init__(self, ws: Any) -> None:
        self.ws, self.next_id, self.events = ws, 0, []

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 30) -> None:
        if any(e.get("method") == method for e in self.events):
            return
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            self.events.append(msg)
            if msg.get("method") == method:
                return


def render(url: str, expression: str, *, settle: float = 0.5) -> Rendered:
    """Load ``url`` in a fresh headless Chromium, wait for the load event, evaluate ``expression``."""
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"{CHROMIUM} not found: install Debian's chromium package (scripts/test.sh does, as root)")
    profile = tempfile.mkdtemp(prefix="rpj-chromium-")
    args = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"]
    args += ["--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.monotonic() + 60
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start (exit {proc.poll()})")
            time.sleep(0.1)
        port = int(open(port_file).read().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        out = Rendered(url)
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as ws:
            s = _Session(ws)
            for domain in ("Runtime", "Log", "Network", "Page"):
                s.call(f"{domain}.enable")
            s.events.clear()
            s.call("Page.navigate", {"url": url})
            s.wait_for("Page.loadEventFired")
            time.sleep(settle)
            result = s.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
            if "exceptionDetails" in result:
                raise RuntimeError(f"expression failed: {result['exceptionDetails']}")
            out.value = result["result"].get("value")
            for e in s.events:
                m, p = e.get("method"), e.get("params", {})
                if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                    out.errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
                elif m == "Runtime.exceptionThrown":
                    out.errors.append("exception: " + json.dumps(p["exceptionDetails"])[:500])
                elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
                    out.errors.append(f"log: {p['entry']['text']} ({p['entry'].get('url', '')})")
                elif m == "Network.requestWillBeSent":
                    out.requests.append(p["request"]["url"])
                elif m == "Network.loadingFailed":
                    out.errors.append(f"load failed: {p.get('errorText')}")
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
