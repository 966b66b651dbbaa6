"""igan-serve in a real browser: headless Chromium (driven by Playwright) opens the page,
pans and zooms; the tiles it requests are drawn pixel for pixel (the screenshot equals
igan-render's file of the same window, and beyond 1:1 each canvas pixel is a sharp square);
zooming out and back in returns to the same place; 'render this view' writes that file; the
fly control moves the view and what it shows is still igan-render's window; the loading
indicator, the help and 'Clear styles'; a token and a root path as a browser meets them.

Chromium is found on the PATH (Debian's `chromium` package), or in Playwright's own
download; when missing, the test installs it (`apt-get install chromium` as root, else
`playwright install chromium`) unless IGAN_INSTALL_CHROMIUM=0, and skips, saying why, when
that fails. IGAN_SERVE_SCREENSHOT=PATH also saves the final screenshot there (the README's
docs/images/serve.png).
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys

import re

import httpx
import numpy as np
import pytest
from PIL import Image
from test_serve import Serve, fake_pixels, fake_server, igan_render, mosaic, stats

pytestmark = pytest.mark.slow
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the browser test needs Playwright: pip install playwright")

VIEW = (800, 500)  # viewport, CSS pixels = device pixels
PANEL = 300  # the right-hand control panel, its margin and shadow
CONTROLS = 60  # Leaflet's zoom buttons, top left


def _installed_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    try:
        with sync_api.sync_playwright() as p:
            path = p.chromium.executable_path
        return path if os.path.exists(path) else None
    except Exception:  # no driver, or no browser downloaded
        return None


def _install_chromium() -> list[str]:
    """Try to install Chromium; returns what was tried and how it ended."""
    tried = []
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        for cmd in (["apt-get", "install", "-y", "-q", "chromium"], ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "chromium"]):
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
            tried.append(f"{' '.join(cmd)}: exit {done.returncode}")
            if cmd[1] == "install" and done.returncode == 0:
                return tried
    done = subprocess.run([sys.executable, "-m", "playwright", "install", "chromium"], capture_output=True, text=True,
                          timeout=1200)
    tried.append(f"playwright install chromium: exit {done.returncode} {done.stderr.strip()[-200:]}")
    return tried


@pytest.fixture(scope="module")
def chromium() -> str:
    path = _installed_chromium()
    if path is None and os.environ.get("IGAN_INSTALL_CHROMIUM", "1") != "0":
        tried = _install_chromium()
        path = _installed_chromium()
        if path is None:
            pytest.skip("Chromium is not installed and could not be: " + "; ".join(tried))
    if path is None:
        pytest.skip("Chromium is not installed (IGAN_INSTALL_CHROMIUM=0)")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    (root / "out").mkdir()
    s = Serve("--device", "cpu", "--seed", 5, "--output", root / "out")
    s.root = root
    yield s
    s.close()


def _screenshot(page) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))


def _wait_drawn(page, timeout=180_000, zoom: str | None = None) -> None:
    """Every tile of the current zoom (or of tile zoom `zoom`) loaded and shown (Leaflet fades
    tiles in over 0.2 s)."""
    page.wait_for_function(
        """(tileZoom) => {
            const map = window.igan && window.igan.map;
            if (!map || document.body.dataset.tiles !== "loaded") return false;
            const zoom = tileZoom || String(map.getZoom());
            const tiles = [...document.querySelectorAll("img.leaflet-tile")]
                .filter((t) => t.src.split("/").at(-3) === zoom);
            return tiles.length > 0 && tiles.every((t) => t.complete && t.naturalWidth === 256 &&
                t.classList.contains("leaflet-tile-loaded") && getComputedStyle(t).opacity === "1");
        }""", arg=zoom, timeout=timeout)
    page.wait_for_timeout(300)


def _origin(page) -> tuple[float, float, int]:
    """(x, y) canvas pixel at the map's top-left corner, and the zoom."""
    return tuple(page.evaluate(
        "() => { const c = igan.fromLatLng(igan.map.containerPointToLatLng([0, 0])); "
        "return [c.x, c.y, igan.map.getZoom()]; }"))


def _region(a: np.ndarray) -> np.ndarray:
    """The part of the map that no control covers."""
    return a[:, CONTROLS:VIEW[0] - PANEL]


def _view(url, canvas, zoom, x, y, width, height) -> np.ndarray:
    """Pixels [x, x + width) x [y, y + height) of level -zoom, from the server's tiles."""
    tx, ty = x // 256, y // 256
    tiles = mosaic(url, canvas, zoom, range(tx, (x + width - 1) // 256 + 1), range(ty, (y + height - 1) // 256 + 1))
    return tiles[y - 256 * ty:y - 256 * ty + height, x - 256 * tx:x - 256 * tx + width]


def _centre(page) -> tuple[float, float, int]:
    return tuple(page.evaluate(
        "() => { const c = igan.fromLatLng(igan.map.getCenter()); return [c.x, c.y, igan.map.getZoom()]; }"))


def _wheel_to(page, zoom: int, at: tuple[int, int]) -> None:
    """Wheel one step at a time at screen point `at` until the map is at `zoom`."""
    page.mouse.move(*at)
    while (now := page.evaluate("() => igan.map.getZoom()")) != zoom:
        page.mouse.wheel(0, 60 if zoom < now else -60)  # one level a step (Leaflet: 60 px a level)
        page.wait_for_function(f"() => igan.map.getZoom() !== {now}")
        page.wait_for_timeout(400)  # the zoom animation


def test_pan_zoom_and_render_this_view_in_chromium(chromium, server):
    requested, errors = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": VIEW[0], "height": VIEW[1]}, device_scale_factor=1)
        page.on("request", lambda r: requested.append(r.url) if "/tiles/" in r.url else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server.url}/#seed=5&x=0&y=0&z=0")
        _wait_drawn(page)
        assert "embedded default model" in page.inner_text("#model")  # the note of what is loaded
        canvas = page.evaluate("() => igan.canvasId()")

        # 1. the known view: the screen shows igan-render's pixels of that window
        x0, y0, zoom = _origin(page)
        assert (x0, y0, zoom) == (-VIEW[0] // 2, -VIEW[1] // 2, 0)
        ref = igan_render(server.root / "view.png", "--seed", 5, "--x0", int(x0), "--y0", int(y0),
                          "--width", VIEW[0], "--height", VIEW[1])
        assert np.array_equal(_region(_screenshot(page)), _region(ref))
        first = {u for u in requested if f"/tiles/{canvas}/0/" in u}
        assert {f"/tiles/{canvas}/0/{x}/{y}.png" for x in (-2, -1, 0, 1) for y in (-1, 0)} <= \
            {u.split(server.url)[1].split("?")[0] for u in first}
        client = page.evaluate("() => igan.client")
        assert all(u.endswith(f"?client={client}") for u in first)  # the page names itself: served in turn
        page.reload()  # one id per tab, kept across reloads: the same tile URLs, from the browser's cache
        _wait_drawn(page)
        assert page.evaluate("() => igan.client") == client

        # 1b. zoomed in beyond 1:1 each canvas pixel is a sharp 2x2 square (no smoothing), and
        # zooming out again (keys) comes back to the same pixels
        page.click("#map", position={"x": 150, "y": 400})  # keyboard focus on the map (no fusion: no style)
        page.keyboard.press("Equal")  # Leaflet's zoom-in key ('+' would carry Shift: 3 levels)
        page.wait_for_function("() => igan.map.getZoom() === 1")
        _wait_drawn(page, zoom="0")
        assert _origin(page) == (-VIEW[0] // 4, -VIEW[1] // 4, 1)
        sharp = ref[VIEW[1] // 4:3 * VIEW[1] // 4, VIEW[0] // 4:3 * VIEW[0] // 4].repeat(2, 0).repeat(2, 1)
        assert np.array_equal(_region(_screenshot(page)), _region(sharp))
        page.keyboard.press("Minus")
        page.wait_for_function("() => igan.map.getZoom() === 0")
        _wait_drawn(page)
        assert _origin(page) == (x0, y0, 0) and np.array_equal(_region(_screenshot(page)), _region(ref))

        # 2. drag to pan (towards negative x, positive y): new tiles are requested and drawn
        n = len(requested)
        page.mouse.move(300, 250)
        page.mouse.down()
        for step in range(1, 11):
            page.mouse.move(300 + 40 * step, 250 - 30 * step)
        page.mouse.up()
        _wait_drawn(page)
        x1, y1, _ = _origin(page)
        assert x1 <= x0 - 380 and y1 >= y0 + 280, (x0, y0, x1, y1)
        assert any(f"/tiles/{canvas}/0/-4/" in u for u in requested[n:])
        assert page.evaluate("() => location.hash").startswith("#seed=5&x=")

        # 3. wheel to zoom out around a point off the centre: a coarser level, each tile the box
        # average of four finer ones; the page tells what is loading and what it costs
        n = len(requested)
        cx, cy, _ = _centre(page)  # make the centre odd: not on the 1:2 grid
        page.evaluate(f"() => igan.map.panBy([{1 - cx % 2}, {1 - cy % 2}], {{animate: false}})")
        before = _centre(page)
        assert before[0] % 2 == 1 and before[1] % 2 == 1, before
        at = (213, 341)
        page.mouse.move(*at)
        page.mouse.wheel(0, 60)  # one zoom step (Leaflet: 60 px a level)
        page.wait_for_function("() => igan.map.getZoom() < 0")
        page.wait_for_function("() => document.body.dataset.tiles === 'loading' && "
                               "!document.getElementById('loading').hidden")
        loading = page.inner_text("#loading")
        assert re.fullmatch(r"Loading \d+ tiles? at 1:(2|4): up to \d+ native tiles.*", loading), loading
        _wait_drawn(page)
        assert page.is_hidden("#loading")
        x2, y2, zoom = _origin(page)
        assert zoom in (-1, -2) and any(f"/tiles/{canvas}/{zoom}/" in u for u in requested[n:])
        scale = 2 ** -zoom
        assert x2 % scale == 0 and y2 % scale == 0, (x2, y2, zoom)
        shown = _view(server.url, canvas, zoom, int(x2 // scale) + CONTROLS, int(y2 // scale),
                      VIEW[0] - PANEL - CONTROLS, VIEW[1])
        assert np.array_equal(_region(_screenshot(page)), shown)
        # ... and back in at the same point: the same centre, to the pixel (it drifted by 1-2 px)
        _wheel_to(page, 0, at)
        assert _centre(page) == before
        _wait_drawn(page)

        # 4. 'render this view' back at the known view: a progress bar, a link, the file
        page.evaluate("() => igan.map.setView(igan.toLatLng(0, 0), 0, {animate: false})")
        _wait_drawn(page)
        page.click("#render-view")
        page.wait_for_selector("#job-link:not([hidden])", timeout=240_000)
        assert page.eval_on_selector("#job-progress", "e => e.value") == 1
        name = page.inner_text("#job-link").removeprefix("Download ")
        out = server.root / "out" / name
        assert np.array_equal(np.asarray(Image.open(out)), ref)
        href = page.get_attribute("#job-link", "href")
        assert httpx.get(server.url + href).content == out.read_bytes()

        # 4b. fly: a constant-speed pan east; after it the screen is still igan-render's window
        page.keyboard.press("?")
        assert page.evaluate("() => document.getElementById('help').open")
        assert "Zooming out costs 4× per level" in page.inner_text("#help")
        page.keyboard.press("?")
        page.keyboard.press("]")  # faster: 120 -> 180 px/s
        assert page.input_value("#fly-speed") == "180"
        fx, fy, _ = _origin(page)
        page.click("#fly")
        assert page.evaluate("() => igan.flying()") and "Stop" in page.inner_text("#fly")
        page.wait_for_function(f"() => igan.fromLatLng(igan.map.containerPointToLatLng([0, 0])).x >= {fx + 150}")
        page.keyboard.press("f")
        assert not page.evaluate("() => igan.flying()")
        _wait_drawn(page)
        gx, gy, zoom = _origin(page)
        assert zoom == 0 and gy == fy and gx >= fx + 150 and gx == int(gx), (fx, fy, gx, gy)
        assert page.evaluate("() => location.hash").startswith(f"#seed=5&x={int(gx) + VIEW[0] // 2}&")
        flown = igan_render(server.root / "flown.png", "--seed", 5, "--x0", int(gx) + CONTROLS, "--y0", int(gy),
                            "--width", VIEW[0] - PANEL - CONTROLS, "--height", VIEW[1])
        assert np.array_equal(_region(_screenshot(page)), flown)

        # 5. pan away before the tiles arrive: the browser drops them, the server stops rendering them
        before = stats(server.url)
        page.evaluate("() => igan.map.setView(igan.toLatLng(90000, 0), -2, {animate: false})")  # cold, slow
        page.wait_for_function("() => document.body.dataset.tiles === 'loading'")
        page.wait_for_timeout(1500)
        page.evaluate("() => igan.map.setView(igan.toLatLng(-90000, 0), 0, {animate: false})")
        _wait_drawn(page)
        after = stats(server.url)
        assert after["tiles"]["cancelled"] > before["tiles"]["cancelled"]
        assert after["render"]["dropped"] > before["render"]["dropped"]

        # 6. the controls: a click in fusion mode drops a style, 360° makes a periodic canvas
        page.check("#fusion")
        page.fill("#style-seed", "42")
        page.mouse.click(200, 250)
        page.wait_for_function("() => igan.state.styles.length === 1 && location.hash.includes('styles=42:')")
        fused = page.evaluate("() => igan.canvasId()")
        assert fused != canvas and httpx.post(f"{server.url}/api/canvas", json={
            "seed": 5, "styles": page.evaluate("() => igan.state.styles"), "blur": 127}).json()["id"] == fused
        page.wait_for_function(f"() => [...document.querySelectorAll('img.leaflet-tile')]"
                               f".some((t) => t.src.includes('/tiles/{fused}/'))")
        page.click("#clear-styles")  # also leaves style fusion: the next click pans, it drops no style
        page.wait_for_function("() => igan.state.styles.length === 0 && !location.hash.includes('styles=')")
        assert not page.is_checked("#fusion") and page.is_hidden("#fusion-controls")
        page.mouse.click(250, 300)
        assert page.evaluate("() => igan.state.styles.length") == 0
        page.check("#wrap")
        page.wait_for_function("() => location.hash.includes('period=4096') && igan.state.styles.length === 0")
        assert "whole 360° panorama" in page.inner_text("#view-size")

        shot = os.environ.get("IGAN_SERVE_SCREENSHOT")
        if shot:  # the README's picture: two styles dropped on seed 5's canvas, at 1:2
            page.goto("about:blank")
            page.goto(f"{server.url}/#seed=5&x=0&y=-100&z=-1&styles=3:-560:-150,21:120:-150&blur=255")
            _wait_drawn(page)
            page.screenshot(path=shot)
        browser.close()
    assert errors == []
    assert stats(server.url)["render"]["failed"] == 0


def test_token_cookie_and_root_path_in_chromium(chromium, tmp_path):
    """The address igan-serve prints beyond loopback, opened in a browser behind a proxy prefix:
    the cookie carries the token to every tile, and the address bar keeps no token."""
    token = "browser-token-0123456789"
    with fake_server(tmp_path, token=token, root_path="/igan") as s, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": VIEW[0], "height": VIEW[1]}, device_scale_factor=1)
        statuses = []
        page.on("response", lambda r: statuses.append((r.status, r.url)))
        page.goto(f"{s.url}/igan/?token={token}#seed=3&x=0&y=0&z=0")
        _wait_drawn(page, timeout=60_000)
        assert page.url == f"{s.url}/igan/#seed=3&x=0&y=0&z=0"  # the token left the address; the view stayed
        tiles = [u for status, u in statuses if "/tiles/" in u]
        assert tiles and all(u.startswith(f"{s.url}/igan/tiles/") for u in tiles)
        assert all(status in (200, 303) for status, _ in statuses), statuses
        assert [c["httpOnly"] and c["sameSite"] == "Strict" for c in page.context.cookies()] == [True]
        x0, y0, _ = _origin(page)
        shown = _region(_screenshot(page))
        expected = np.concatenate([np.concatenate([fake_pixels(3, x, y) for x in range(-2, 2)], axis=1)
                                   for y in (-1, 0)])[256 + int(y0):256 + int(y0) + VIEW[1], 512 + int(x0):][:, :VIEW[0]]
        assert np.array_equal(shown, _region(expected))
        other = browser.new_page()  # no cookie, no token: refused
        assert other.goto(f"{s.url}/igan/").status == 401
        browser.close()
