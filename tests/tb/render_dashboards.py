"""Render what a person sees of a demo run in TensorBoard: headless Chromium screenshots.

    python tests/tb/render_dashboards.py [--out runs/tb_browser] [--chromium /usr/bin/chromium]

(``nox -s tb_browser`` runs it; it is not a test and not in CI's set.) It runs
``cvml demo`` into ``<out>/demo``, starts a real ``tensorboard`` on a free port of
127.0.0.1, waits until it serves the demo's runs, and has headless Chromium render the
Time Series (TensorBoard's landing page), Scalars and Images dashboards to
``<out>/<dashboard>.png`` (1400x1000) for a person to look at. Exits 2 when Chromium
is missing, 1 when a step fails; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

DASHBOARDS = ("timeseries", "scalars", "images")
# TensorBoard's own flag: Time Series charts drawn as SVG, not WebGL (which headless
# Chromium without a GPU drew only now and then).
QUERY = "?forceSVG=true"
WAIT_SECONDS = 120  # for the server to serve the runs
RENDER_SECONDS = 180  # for one Chromium screenshot
# Chromium lets the page run this long (virtual time) before the screenshot: TensorBoard
# fetches its data and draws its charts after the page has loaded.
VIRTUAL_TIME_MS = 30000
MIN_PNG_BYTES = 20000  # a dashboard with charts or images, not an empty page


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _wait_for_runs(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tensorboard exited with {proc.returncode}: {log.read_text()}")
        try:
            scalars = _get(f"{base}/data/plugin/scalars/tags")
            images = _get(f"{base}/data/plugin/images/tags")
            if {"tb/train", "tb/validation"} <= set(scalars) and images:  # type: ignore[arg-type]
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"tensorboard did not serve the demo runs in {WAIT_SECONDS} s")


def _screenshot(chromium: str, url: str, png: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        command = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
            f"--virtual-time-budget={VIRTUAL_TIME_MS}", f"--screenshot={png}",
            "--window-size=1400,1000", url,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=RENDER_SECONDS)
    if result.returncode != 0 or not png.exists():
        raise RuntimeError(f"chromium failed ({result.returncode}): {result.stderr[-2000:]}")
    if png.stat().st_size < MIN_PNG_BYTES:
        raise RuntimeError(f"{png} is {png.stat().st_size} bytes: the page looks empty")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/tb_browser", help="where the PNGs go")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args(argv)
    chromium = shutil.which(args.chromium)
    if chromium is None:
        print(f"render_dashboards: no Chromium at {args.chromium} (on Debian: apt-get "
              "install chromium); nothing rendered", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    demo = out / "demo"
    subprocess.run(
        [sys.executable, "-m", "cvml_core", "demo", "--log-dir", str(demo),
         "--epochs", str(args.epochs)],
        check=True, stdout=subprocess.DEVNULL,
    )
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = out / "tensorboard.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(demo),
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=log_file,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        try:
            _wait_for_runs(base, proc, log)
            for dashboard in DASHBOARDS:
                png = out / f"{dashboard}.png"
                png.unlink(missing_ok=True)
                _screenshot(chromium, f"{base}/{QUERY}#{dashboard}", png)
                print(f"{dashboard}: {png}")
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"render_dashboards: {exc}", file=sys.stderr)
            return 1
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    print(f"TensorBoard of {demo} rendered by {chromium}; look at the PNGs above.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
