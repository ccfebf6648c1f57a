"""Drive the hear study's listening_test.html in headless Chromium (Chrome DevTools protocol).

    python scripts/check_listening_page.py RUN_DIR/listening_test.html --out /tmp/listen-check

Starts Debian's chromium headless, opens the page, types a listener id, plays every triplet and
answers it with the keyboard (1/2; one Space replay on the first triplet), right on even steps and
wrong on odd ones, downloads the answers through the page's own export button, scores the CSV
with `jaxprobe hear-score`'s reader and checks the error rate of every cell against the answers
given. Fails if the page requests anything that is not file:, data: or blob: (nothing may leave
the browser). Writes screenshots (start, mid-test, end) and the exported CSV to --out.
Also used by tests/jaxprobe/test_listening_test.py.
"""
from __future__ import annotations

import argparse
import base64
import json
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required", "--window-size=1000,800", "--remote-debugging-port=0"]


class _CDP:
    def __init__(self, ws_url: str):
        import websocket  # websocket-client

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.n = 0
        self.events: list[dict] = []

    def __call__(self, method: str, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"CDP {method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def js(self, expr: str):
        r = self("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page script {expr!r} failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def key(self, key: str, code: str, text: str = "", vk: int = 0):
        for kind in ("keyDown", "keyUp"):
            self("Input.dispatchKeyEvent", type=kind, key=key, code=code, windowsVirtualKeyCode=vk,
                 **({"text": text} if kind == "keyDown" and text else {}))

    def wait(self, expr: str, timeout: float, what: str):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.js(expr):
                return
            time.sleep(0.05)
        status = self.js("document.getElementById('status').textContent")
        raise TimeoutError(f"waited {timeout} s for {what} ({expr}); page status: {status!r}")

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self("Page.captureScreenshot", format="png")["data"]))
        return path


def check_page(page: Path, out: Path, *, listener: str = "browser-check", timeout_per_triplet: float = 30.0) -> dict:
    """Run the page as described in the module docstring; returns what it found. Raises on failure."""
    from jaxprobe.report.hear_score import read_answers, score_answers

    page, out = Path(page).resolve(), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    profile = Path(tempfile.mkdtemp(prefix="chromium-"))
    downloads = out / "downloads"
    downloads.mkdir(exist_ok=True)
    for old in downloads.glob("*"):
        old.unlink()
    cdp = None
    proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        t0 = time.monotonic()
        while not port_file.is_file() or not port_file.read_text().strip():
            if proc.poll() is not None or time.monotonic() - t0 > 60:
                raise RuntimeError(f"chromium did not start (exit code {proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            targets = json.loads(resp.read())
        cdp = _CDP(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
        cdp("Network.enable")
        cdp("Page.enable")
        cdp("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads.resolve()))
        cdp("Page.navigate", url=page.as_uri())
        cdp.wait("document.readyState === 'complete' && !!window.listeningTest", 30, "the page to load")
        n = cdp.js("JSON.parse(document.getElementById('data').textContent).triplets.length")
        shots = [cdp.screenshot(out / "listening_start.png")]
        cdp.js(f"document.getElementById('listener').value = {json.dumps(listener)}")
        cdp.key("Enter", "Enter", "\r", 13)
        cdp.wait("!document.getElementById('trial').hidden", 10, "the first triplet")
        given = []
        for step in range(n):
            cdp.wait("window.listeningTest.heardX", timeout_per_triplet, f"triplet {step + 1}'s X to play")
            if step == 0:  # Space replays the triplet from A
                cdp.key(" ", "Space", " ", 32)
                cdp.wait("!window.listeningTest.heardX", 5, "the replay to start")
                cdp.wait("window.listeningTest.heardX", timeout_per_triplet, "the replay's X")
            if step == n // 2:
                shots.append(cdp.screenshot(out / "listening_mid.png"))
            cur = cdp.js("(() => { const S = window.listeningTest; const k = S.order[S.i]; const t = "
                         "JSON.parse(document.getElementById('data').textContent).triplets[k]; const sw = S.swap[S.i]; "
                         "return {id: t.id, truth: sw ? (t.truth === 'A' ? 'B' : 'A') : t.truth}; })()")
            ans = cur["truth"] if step % 2 == 0 else {"A": "B", "B": "A"}[cur["truth"]]
            given.append({**cur, "answer": ans})
            cdp.key("1" if ans == "A" else "2", "Digit1" if ans == "A" else "Digit2", "1" if ans == "A" else "2",
                    49 if ans == "A" else 50)
            cdp.wait(f"window.listeningTest.answers.length === {step + 1}", 10, f"answer {step + 1} to register")
        cdp.wait("!document.getElementById('end').hidden", 10, "the end screen")
        cdp.js("document.getElementById('export').click()")
        t0 = time.monotonic()
        while not (files := [p for p in downloads.glob("*.csv")]) and time.monotonic() - t0 < 20:
            time.sleep(0.1)
        if not files:
            raise RuntimeError(f"the export produced no CSV in {downloads}")
        shots.append(cdp.screenshot(out / "listening_end.png"))
        in_page = cdp.js("window.listeningTest.csvText()")
        requests = [e["params"]["request"]["url"] for e in cdp.events if e.get("method") == "Network.requestWillBeSent"]
    finally:
        if cdp is not None:
            cdp.ws.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    exported = files[0]
    if exported.read_text() != in_page:
        raise AssertionError("the downloaded CSV differs from the page's answers")
    outside = [u for u in requests if not u.startswith(("file:", "data:", "blob:"))]
    if outside:
        raise AssertionError(f"the page requested {outside[:5]}: nothing may leave the browser")
    rows = read_answers([exported])
    if [(r["triplet"], r["answer"], r["truth"]) for r in rows] != [(g["id"], g["answer"], g["truth"]) for g in given]:
        raise AssertionError("the exported answers differ from the keys pressed")
    want: dict[tuple, list[bool]] = {}
    for r in rows:
        want.setdefault((r["model"], r["regime"], r["layer"], r["condition"]), []).append(r["answer"] != r["truth"])
    scores = score_answers(rows, n_boot=200)
    for s in scores:
        w = want[(s["model"], s["regime"], s["layer"], s["condition"])]
        if abs(s["error_rate"] - sum(w) / len(w)) > 1e-12:
            raise AssertionError(f"hear-score gives {s['error_rate']} for {s}; the answers given say {sum(w) / len(w)}")
    n_wrong = sum(g["answer"] != g["truth"] for g in given)
    return {"n_triplets": n, "n_answers": len(rows), "n_wrong": n_wrong, "exported": exported,
            "screenshots": shots, "requests": requests, "scores": scores, "ids": {g["id"] for g in given}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("page", type=Path)
    ap.add_argument("--out", type=Path, default=Path("/tmp/listening-check"))
    ap.add_argument("--listener", default="browser-check")
    a = ap.parse_args(argv)
    r = check_page(a.page, a.out, listener=a.listener)
    print(f"{r['n_triplets']} triplets answered ({r['n_wrong']} wrong on purpose), exported to {r['exported']}, "
          f"scored by hear-score in {len(r['scores'])} cells; {len(r['requests'])} requests, all file:/data:/blob:; "
          f"screenshots: {', '.join(str(p) for p in r['screenshots'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
