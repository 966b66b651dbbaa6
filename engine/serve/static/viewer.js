// igan-serve's viewer: Leaflet over the server's tiles.
//
// Canvas pixel (x, y) is Leaflet's LatLng(-y, x) in CRS.Simple, so zoom 0 shows native pixels
// and zoom -L the 1:2^L level; /tiles/<canvas>/<zoom>/<x>/<y>.png is Leaflet's own XYZ URL.
// The state (seed, position, zoom, styles, 360-degree period) lives in the URL's hash.
// Every URL starts with the server's root path (a reverse proxy's prefix: <body data-root>).
// Tile URLs name this tab (?client=..., kept across reloads): the server serves its clients in turn.
"use strict";

(async function () {
  const TILE = 256;
  const ROOT = document.body.dataset.root || "";
  // One id per browser tab, kept across reloads (sessionStorage): a reload asks for the same
  // tile URLs, which the browser's cache answers (immutable), while two tabs are two clients.
  const CLIENT = (() => {
    const made = () => Array.from(crypto.getRandomValues(new Uint8Array(12)),
                                  (b) => b.toString(16).padStart(2, "0")).join("");
    try {
      const kept = sessionStorage.getItem("igan-client");
      if (kept && /^[0-9a-f]{24}$/.test(kept)) return kept;
      const id = made();
      sessionStorage.setItem("igan-client", id);
      return id;
    } catch (e) {
      return made(); // storage refused (a sandboxed frame): one id for this page load
    }
  })();
  const $ = (id) => document.getElementById(id);
  const info = await (await fetch(`${ROOT}/api/info`)).json();
  const toLatLng = (x, y) => L.latLng(-y, x);
  const fromLatLng = (ll) => ({ x: ll.lng, y: -ll.lat });

  // ---- state <-> URL hash ----------------------------------------------------------------
  const state = { seed: info.seed || 0, x: 0, y: 0, z: 0, period: info.wrap, blur: 127, styles: [] };
  function readHash() {
    const h = new URLSearchParams(location.hash.slice(1));
    const num = (k) => (h.has(k) && h.get(k) !== "" && Number.isFinite(+h.get(k)) ? +h.get(k) : undefined);
    for (const k of ["seed", "x", "y", "z", "blur"]) if (num(k) !== undefined) state[k] = num(k);
    if (h.has("period")) state.period = num("period") || null;
    if (h.has("styles")) {
      state.styles = h.get("styles").split(",").filter(Boolean).map((s) => {
        const [seed, x, y] = s.split(":").map(Number);
        return { seed, x, y };
      }).filter((s) => [s.seed, s.x, s.y].every(Number.isInteger));
    }
  }
  function writeHash() {
    const c = exact;
    const h = [];  // numbers, '-', ':' and ',' only: nothing to escape
    if (info.kind === "canvas") h.push(`seed=${state.seed}`);
    h.push(`x=${Math.round(c.x)}`, `y=${Math.round(c.y)}`, `z=${map.getZoom()}`);
    if (state.period) h.push(`period=${state.period}`);
    if (state.styles.length) {
      h.push("styles=" + state.styles.map((s) => `${s.seed}:${s.x}:${s.y}`).join(","), `blur=${state.blur}`);
    }
    history.replaceState(null, "", "#" + h.join("&"));
  }
  readHash();

  // ---- the map ------------------------------------------------------------------------------
  const map = L.map("map", {
    crs: L.CRS.Simple, minZoom: -info.max_level, maxZoom: 3, zoomSnap: 1, zoomDelta: 1,
    attributionControl: false, worldCopyJump: false,
  });
  if (info.kind === "file" && !location.hash) {
    const bounds = L.latLngBounds(toLatLng(0, info.height), toLatLng(info.width, 0));
    map.fitBounds(bounds, { animate: false });
    state.z = map.getZoom();
  } else {
    map.setView(toLatLng(state.x, state.y), state.z, { animate: false });
  }

  // ---- the exact centre ----------------------------------------------------------------------
  // Leaflet puts tiles on whole screen pixels, so at 1:2^L it shows the centre rounded to 2^L
  // canvas pixels, and zooming back in from there (around the rounded centre) drifted. `exact`
  // is the centre as if nothing were rounded: zooming moves it so that the canvas point under
  // the cursor (or the centre) stays put, and zooming back in returns to it. A pan, drag or
  // flight sets it to the centre shown.
  let exact = fromLatLng(map.getCenter());
  let zoomTarget = null;
  const clampZoom = (z) => Math.max(map.getMinZoom(), Math.min(map.getMaxZoom(), z));
  function zoomTo(zoom, around, options) {
    const z0 = map.getZoom(), z1 = clampZoom(zoom), half = map.getSize().divideBy(2);
    const m = around ? around.subtract(half) : L.point(0, 0);
    const k = Math.pow(2, -z0) - Math.pow(2, -z1);  // canvas px per screen px, before minus after
    exact = { x: exact.x + m.x * k, y: exact.y + m.y * k };
    zoomTarget = exact;
    return L.Map.prototype.setView.call(map, toLatLng(exact.x, exact.y), z1, options);
  }
  map.setZoom = (zoom, options) => zoomTo(zoom, null, options);
  map.setZoomAround = (where, zoom, options) =>
    zoomTo(zoom, where instanceof L.Point ? where : map.latLngToContainerPoint(where), options);
  map.on("dragstart", () => { zoomTarget = null; });  // a drag during a zoom: the centre shown wins
  map.on("moveend", () => {
    if (zoomTarget) { exact = zoomTarget; zoomTarget = null; return; }
    exact = fromLatLng(map.getCenter());
  });

  let layer = null;
  let canvasId = info.kind === "file" ? info.canvas : null;
  const markers = L.layerGroup().addTo(map);

  function showLayer(id) {
    const options = {
      tileSize: TILE, minZoom: -info.max_level, maxZoom: 3, minNativeZoom: -info.max_level, maxNativeZoom: 0,
      noWrap: true, keepBuffer: 1, updateWhenZooming: false,
    };
    if (info.kind === "file") {
      options.bounds = L.latLngBounds(toLatLng(0, info.height), toLatLng(info.width, 0));
    }
    const next = L.tileLayer(`${ROOT}/tiles/${id}/{z}/{x}/{y}.png?client=${CLIENT}`, options);
    next.on("tileerror", (e) => retry(next, e.tile));  // 503 (queue full) or a restarted server
    next.on("loading", () => { document.body.dataset.tiles = "loading"; showLoading(); });
    next.on("load", () => { document.body.dataset.tiles = "loaded"; showLoading(); });
    next.on("tileloadstart tileload tileerror tileabort tileunload", showLoading);
    next.addTo(map);
    if (layer) map.removeLayer(layer);
    layer = next;
  }

  function retry(owner, tile) {
    const n = (tile.dataset.retries | 0) + 1;
    if (n > 8 || !tile.src || tile.src.startsWith("data:")) return;
    tile.dataset.retries = n;
    setTimeout(async () => {
      if (owner !== layer || !tile.isConnected) return;
      if (n === 2 && info.kind === "canvas") await registerCanvas();  // the server may have restarted
      tile.src = tile.src.split("&retry=")[0] + "&retry=" + n;
    }, 400 * n);
  }

  async function registerCanvas() {
    const body = { seed: state.seed, period: state.period || null };
    if (state.styles.length) { body.styles = state.styles; body.blur = state.blur; }
    const r = await fetch(`${ROOT}/api/canvas`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const answer = await r.json();
    if (!r.ok) throw new Error(answer.error);
    return answer.id;
  }

  async function setCanvas() {
    try {
      canvasId = await registerCanvas();
    } catch (err) {
      $("position").textContent = "canvas refused: " + err.message;
      return;
    }
    showLayer(canvasId);
    drawStyles();
    writeHash();
    showPosition();
  }

  // ---- controls -----------------------------------------------------------------------------
  $("model").textContent = (info.kind === "file" ? "File: " : "Model: ") + info.model;
  if (info.kind === "file") {
    $("canvas-controls").hidden = true;
    $("render-controls").hidden = true;
    showLayer(canvasId);
  } else {
    $("seed").value = state.seed;
    $("wrap").checked = !!state.period;
    if (state.period) $("period").value = state.period;
    $("blur").value = state.blur;
    $("fusion").checked = state.styles.length > 0;
    $("fusion-controls").hidden = !state.styles.length;
    document.body.classList.toggle("fusion", state.styles.length > 0);
    $("style-seed").value = state.styles.reduce((m, s) => Math.max(m, s.seed + 1), state.seed + 1);
    $("seed-form").addEventListener("submit", (e) => {
      e.preventDefault();
      state.seed = Math.max(0, parseInt($("seed").value, 10) || 0);
      setCanvas();
    });
    const wrapChanged = () => {
      state.period = $("wrap").checked ? Math.max(TILE, Math.round(+$("period").value / TILE) * TILE) : null;
      if (state.period) $("period").value = state.period;
      setCanvas();
    };
    $("wrap").addEventListener("change", wrapChanged);
    $("period").addEventListener("change", () => { if ($("wrap").checked) wrapChanged(); });
    $("fusion").addEventListener("change", () => {
      $("fusion-controls").hidden = !$("fusion").checked;
      document.body.classList.toggle("fusion", $("fusion").checked);
    });
    $("blur").addEventListener("change", () => {
      state.blur = Math.min(4096, Math.max(1, parseInt($("blur").value, 10) || 127));
      if (state.styles.length) setCanvas();
    });
    $("clear-styles").addEventListener("click", () => {
      state.styles = [];
      $("fusion").checked = false;  // clearing the styles also leaves style fusion: the next click pans
      $("fusion-controls").hidden = true;
      document.body.classList.remove("fusion");
      setCanvas();
    });
    map.on("click", (e) => {
      if (!$("fusion").checked) return;
      const c = fromLatLng(e.latlng);
      const seed = Math.max(0, parseInt($("style-seed").value, 10) || 0);
      state.styles.push({ seed, x: Math.round(c.x), y: Math.round(c.y) });
      $("style-seed").value = seed + 1;
      setCanvas();
    });
    $("render-view").addEventListener("click", renderView);
    await setCanvas();
  }

  function drawStyles() {
    markers.clearLayers();
    const list = $("styles");
    list.textContent = "";
    state.styles.forEach((s, i) => {
      L.circleMarker(toLatLng(s.x + 0.5, s.y + 0.5), { radius: 6, color: "#fff", weight: 2, fillColor: "#d33", fillOpacity: 0.9 })
        .bindTooltip(`style seed ${s.seed}`).addTo(markers);
      const item = document.createElement("li");
      item.textContent = `seed ${s.seed} at (${s.x}, ${s.y})`;
      const remove = document.createElement("button");
      remove.type = "button"; remove.textContent = "remove";
      remove.addEventListener("click", () => { state.styles.splice(i, 1); setCanvas(); });
      item.appendChild(remove);
      list.appendChild(item);
    });
  }

  // ---- the view and 'render this view' -------------------------------------------------------
  function viewWindow() {
    const b = map.getPixelBounds(), s = Math.pow(2, map.getZoom());
    const x0 = Math.floor(b.min.x / s), y0 = Math.floor(b.min.y / s);
    const w = { x0, y0, width: Math.ceil(b.max.x / s) - x0, height: Math.ceil(b.max.y / s) - y0 };
    if (state.period) w.width = state.period;  // a 360-degree render is the whole panorama
    return w;
  }

  function showPosition() {
    const c = exact, z = map.getZoom();
    const scale = z <= 0 ? `1:${Math.pow(2, -z)}` : `${Math.pow(2, z)}:1`;
    $("position").textContent = `centre (${Math.round(c.x)}, ${Math.round(c.y)}), scale ${scale}`;
    if (info.kind === "canvas") {
      const w = viewWindow();
      $("view-size").textContent = `${w.width} × ${w.height} px (${(w.width * w.height / 1e6).toFixed(1)} MP) ` +
        `from (${w.x0}, ${w.y0})` + (state.period ? ", the whole 360° panorama" : "");
    }
  }
  map.on("moveend zoomend", () => { showPosition(); if (!flight) writeHash(); });
  showPosition();

  // ---- what is loading -----------------------------------------------------------------------
  // Tiles of the current zoom still on their way; at 1:2^L each may need 4^L native tiles,
  // rendered at the server's measured rate (shared with everyone using it).
  let rate = info.rate;
  function pendingTiles() {
    if (!layer || !layer._tiles) return 0;
    const z = map.getZoom();
    return Object.values(layer._tiles).filter((t) => !t.loaded && t.coords.z === Math.min(0, z)).length;
  }
  function showLoading() {
    const n = pendingTiles(), box = $("loading");
    box.hidden = n === 0;
    document.body.dataset.pending = String(n);
    if (!n) return;
    const level = Math.max(0, -map.getZoom());
    let text = `Loading ${n} tile${n === 1 ? "" : "s"}`;
    if (level > 0) {
      const native = n * Math.pow(4, level);
      text += ` at 1:${Math.pow(2, level)}: up to ${native} native tiles`;
      if (rate) text += `, about ${formatSeconds(native / rate)} at ${rate.toFixed(1)} tiles/s (less what is cached)`;
    } else if (rate) {
      text += `, about ${formatSeconds(n / rate)}`;
    }
    box.textContent = text;
  }
  function formatSeconds(s) {
    return s < 90 ? `${Math.ceil(s)} s` : `${Math.round(s / 60)} min`;
  }
  setInterval(async () => {  // the rate grows more accurate as the server renders
    if (!pendingTiles()) return;
    try {
      const st = await (await fetch(`${ROOT}/api/stats`)).json();
      if (st.render.rendered && st.render.busy_seconds > 0) rate = st.render.rendered / st.render.busy_seconds;
      showLoading();
    } catch (err) { /* the next tick */ }
  }, 2000);

  // ---- fly: a constant-speed pan ------------------------------------------------------------
  // requestAnimationFrame moves the view by whole screen pixels (the remainder is carried),
  // so every frame shows the tiles as they are, on the pixel grid.
  const DIRECTIONS = { e: [1, 0], w: [-1, 0], n: [0, -1], s: [0, 1], ne: [1, -1], nw: [-1, -1], se: [1, 1], sw: [-1, 1] };
  let flight = null;
  const flySpeed = () => Math.min(2000, Math.max(1, +$("fly-speed").value || 120));
  function fly(on) {
    if (on === undefined) on = !flight;
    if (on && !flight) {
      flight = { last: null, carry: [0, 0] };
      requestAnimationFrame(flyFrame);
    } else if (!on && flight) {
      flight = null;
      writeHash();
    }
    $("fly").textContent = flight ? "Stop flying (F)" : "Fly (F)";
    $("fly").setAttribute("aria-pressed", String(!!flight));
    document.body.dataset.flying = flight ? "1" : "";
  }
  function flyFrame(t) {
    if (!flight) return;
    if (flight.last !== null) {
      const dt = Math.min(0.1, (t - flight.last) / 1000), d = DIRECTIONS[$("fly-dir").value] || DIRECTIONS.e;
      const norm = Math.hypot(d[0], d[1]), v = flySpeed() * dt / norm;
      flight.carry[0] += d[0] * v;
      flight.carry[1] += d[1] * v;
      const dx = Math.trunc(flight.carry[0]), dy = Math.trunc(flight.carry[1]);
      if (dx || dy) {
        flight.carry[0] -= dx;
        flight.carry[1] -= dy;
        map.panBy([dx, dy], { animate: false });
      }
    }
    flight.last = t;
    requestAnimationFrame(flyFrame);
  }
  function setSpeed(factor) {
    $("fly-speed").value = Math.round(Math.min(2000, Math.max(1, flySpeed() * factor)));
  }
  $("fly").addEventListener("click", () => fly());
  map.on("dragstart", () => fly(false));
  document.addEventListener("keydown", (e) => {
    if (e.altKey || e.ctrlKey || e.metaKey || /^(INPUT|SELECT|TEXTAREA)$/.test(e.target.tagName)) return;
    if (e.key === "f" || e.key === "F") fly();
    else if (e.key === "]") setSpeed(1.5);
    else if (e.key === "[") setSpeed(1 / 1.5);
    else if (e.key === "Escape") fly(false);
    else if (e.key === "?") $("help").open = !$("help").open;
    else return;
    e.preventDefault();
  });

  async function renderView() {
    const w = viewWindow();
    const body = { canvas: canvasId, format: $("format").value, ...w };
    $("job-link").hidden = true;
    $("job-state").textContent = "starting igan-render…";
    const r = await fetch(`${ROOT}/api/jobs`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const job = await r.json();
    if (!r.ok) { $("job-state").textContent = "refused: " + job.error; return; }
    $("job-progress").hidden = false;
    $("job-progress").value = 0;
    await follow(job.id);
  }

  async function follow(id) {
    for (;;) {
      const job = await (await fetch(`${ROOT}/api/jobs/${id}`)).json();
      $("job-progress").value = job.progress;
      const tiles = job.tiles_total ? ` ${job.tiles_done}/${job.tiles_total} tiles` : "";
      $("job-state").textContent = `${job.state}${tiles}: ${job.file}`;
      if (job.state === "done") {
        $("job-link").href = job.download;
        $("job-link").textContent = `Download ${job.file}`;
        $("job-link").hidden = false;
        $("job-state").textContent = `done in ${job.seconds.toFixed(1)} s: ${info.output}/${job.file}`;
        return job;
      }
      if (job.state === "failed" || job.state === "cancelled") {
        $("job-state").textContent = `${job.state}: ${job.error || ""}`;
        return job;
      }
      await new Promise((ok) => setTimeout(ok, 400));
    }
  }

  // for scripts and tests: the map, and the canvas window on screen
  window.igan = { map, info, state, viewWindow, canvasId: () => canvasId, toLatLng, fromLatLng, fly,
                  flying: () => !!flight, exactCentre: () => ({ ...exact }), pendingTiles, client: CLIENT };
  document.body.dataset.ready = "1";
})();
