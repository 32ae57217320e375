// The editor page: draws the label map from the instance ids the API returns, turns mouse
// gestures and keys into edits of the script vocabulary, and shows what the server renders.
// Everything goes through the HTTP API (see pix2pixhd_jax/editing/server/app.py); edits run one at
// a time, and swatches are asked for only while no edit is queued (the server also stops them as
// soon as an edit waits), so they never delay an edit.
"use strict";

const $ = (id) => document.getElementById(id);

const editor = {
  info: null,        // GET /api/info
  state: null,       // the last scene response
  inst: null,        // Uint16Array of instance ids, row-major
  classOf: new Map(),  // instance id -> class id
  rows: new Map(),     // instance id -> row of state.instances
  colours: [],       // display colour per class: the Cityscapes colours, repeats made distinct
  selected: null,    // selected instance id
  currentClass: 26,  // class for paint / add-object tools and the palette highlight
  swatchesFor: null, // "id:class" whose swatches are shown (or wanted)
  version: 0,        // scene responses received (tests wait on this)
  busy: false,       // an edit (or load) is queued or running
  pending: 0,        // queued API tasks
  errors: 0,
  warnings: [],      // the current scene's upload warnings
  gesture: null,     // the drag / stroke / rectangle / pan in progress
  base: null,        // the label map's ImageData as last drawn (the brush cursor draws over it)
  view: { fit: 1, zoom: 1, panX: 0, panY: 0 },  // CSS px per map pixel at zoom 1; zoom; pan in CSS px
};
window.editor = editor;

const OBJECT_OPS_REASON = (row) =>
  `${row.class_name} (region ${row.id}) is a stuff region: delete, flip, resize and move are for objects ` +
  "(cars, people, ...); paint over it with another class instead";

// ---------------------------------------------------------------------------- API calls

let queue = Promise.resolve();

function setBusy() {
  editor.busy = editor.pending > 0;
  document.body.dataset.busy = editor.busy ? "1" : "";
}

function enqueue(task) {
  // One request at a time, in the order the user made them; swatches wait until the queue is empty.
  editor.pending += 1;
  setBusy();
  abortSwatches();
  queue = queue.then(async () => {
    try {
      await task();
    } catch (err) {
      showError(err.message);
    } finally {
      editor.pending -= 1;
      setBusy();
      if (!editor.pending) pumpSwatches();
    }
  });
  return queue;
}

class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

async function api(method, path, body, signal) {
  const options = { method, signal };
  if (body instanceof FormData) {
    options.body = body;
  } else if (body !== undefined) {
    options.body = JSON.stringify(body);
    options.headers = { "Content-Type": "application/json" };
  }
  const started = performance.now();
  const response = await fetch(path, options);
  let data;
  try {
    data = await response.json();
  } catch (err) {
    // Aborted while the body was still arriving: an abort, not a malformed answer from the server.
    if (err.name === "AbortError") throw err;
    throw new ApiError(`${method} ${path}: HTTP ${response.status}`, response.status);
  }
  if (!response.ok) {
    throw new ApiError(data.error || `${method} ${path}: HTTP ${response.status}`, response.status);
  }
  data.roundTripMs = performance.now() - started;
  return data;
}

function showError(message) {
  // In the status bar above the views: visible whatever the window size and scroll position.
  editor.errors += 1;
  $("error").textContent = message;
  $("dismiss").hidden = false;
}

function showWarnings() {
  $("warning").textContent = editor.warnings.join("\n");
  $("dismiss").hidden = !$("error").textContent && !editor.warnings.length;
}

function edit(op) {
  if (!editor.state) return Promise.resolve();
  return enqueue(async () => {
    const data = await api("POST", `/api/scenes/${editor.state.scene_id}/edits`, op);
    if (data.region !== null && data.region !== undefined && op.op !== "delete") {
      editor.selected = data.region;
    }
    setState(data);
  });
}

function setLocal(on) {
  // Per scene (tab): the edits that follow are composited locally, or show the raw render.
  if (!editor.state) return Promise.resolve();
  return enqueue(async () => setState(await api("POST", `/api/scenes/${editor.state.scene_id}/local`, { local: on })));
}

function history(which) {
  if (!editor.state) return Promise.resolve();
  return enqueue(async () => setState(await api("POST", `/api/scenes/${editor.state.scene_id}/${which}`)));
}

function jumpTo(step) {
  // Back or forward to a state of the history list: that many undo / redo requests (no render).
  if (!editor.state) return Promise.resolve();
  return enqueue(async () => {
    let data = editor.state;
    while (data.step !== step) {
      const which = step < data.step ? "undo" : "redo";
      if (which === "undo" ? !data.can_undo : !data.can_redo) break;
      data = await api("POST", `/api/scenes/${data.scene_id}/${which}`);
    }
    if (data !== editor.state) setState(data);
  });
}

// ---------------------------------------------------------------------------- state

function decodeIds(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Uint16Array(bytes.buffer);  // little-endian, as every browser's typed arrays
}

function setState(data) {
  const sizeChanged = !editor.state || editor.state.width !== data.width || editor.state.height !== data.height;
  editor.state = data;
  editor.inst = decodeIds(data.inst_raw);
  editor.classOf = new Map(data.instances.map((r) => [r.id, r.class]));
  editor.rows = new Map(data.instances.map((r) => [r.id, r]));
  if (editor.selected !== null && !editor.rows.has(editor.selected)) editor.selected = null;
  const canvas = $("label-canvas");
  if (canvas.width !== data.width || canvas.height !== data.height) {
    canvas.width = data.width;
    canvas.height = data.height;
  }
  if (sizeChanged) Object.assign(editor.view, { zoom: 1, panX: 0, panY: 0 });
  $("image").src = `data:image/png;base64,${data.image_png}`;
  $("dl-image").href = $("image").src;
  $("dl-label").href = `data:image/png;base64,${data.label_png}`;
  $("dl-inst").href = `data:image/png;base64,${data.inst_png}`;
  $("dl-script").href = `/api/scenes/${data.scene_id}/script`;
  $("undo").disabled = !data.can_undo;
  $("redo").disabled = !data.can_redo;
  const count = data.edit_count !== undefined ? data.edit_count : data.num_edits;
  $("edit-count").textContent = `${count} edit${count === 1 ? "" : "s"}`;
  showHistory(data);
  $("local").checked = Boolean(data.local);
  const render = data.render_ms > 0 ? `render ${data.render_ms.toFixed(0)} ms, ` : "no render (history), ";
  $("render-time").textContent =
    `(${render}server ${data.server_ms.toFixed(0)} ms, round trip ${data.roundTripMs.toFixed(0)} ms)`;
  $("error").textContent = "";
  showWarnings();
  editor.version += 1;
  layout();
  drawLabels();
  showSelection();
}

function showHistory(data) {
  const list = $("history");
  list.textContent = "";
  (data.steps || []).forEach((label, i) => {
    const item = document.createElement("li");
    item.textContent = label;
    item.dataset.step = String(i);
    if (i === data.step) item.classList.add("current");
    if (i > data.step) item.classList.add("future");
    item.addEventListener("click", () => jumpTo(i));
    list.appendChild(item);
  });
  const current = list.querySelector("li.current");
  if (current) current.scrollIntoView({ block: "nearest" });
}

// ---------------------------------------------------------------------------- layout and view

function layout() {
  // Label map and image both in view: side by side or stacked, whichever shows them larger.
  if (!editor.state) return;
  const { width: w, height: h } = editor.state;
  const figures = $("figures");
  const top = figures.getBoundingClientRect().top;
  const caption = 22, gap = 10;
  const availW = Math.max(50, figures.parentElement.clientWidth - 4);
  const availH = Math.max(50, window.innerHeight - top - 12);
  const side = Math.min((availW - gap) / (2 * w), (availH - caption) / h);
  const stacked = Math.min(availW / w, (availH - 2 * caption - gap) / (2 * h));
  figures.classList.toggle("stacked", stacked > side);
  editor.view.fit = Math.max(0.1, Math.max(side, stacked));
  const fw = `${Math.floor(w * editor.view.fit)}px`, fh = `${Math.floor(h * editor.view.fit)}px`;
  for (const stage of [$("label-stage"), $("image-stage")]) {
    stage.style.width = fw;
    stage.style.height = fh;
  }
  applyView();
}

function applyView() {
  const v = editor.view;
  if (!editor.state) return;
  const { width: w, height: h } = editor.state;
  for (const el of [$("label-canvas"), $("image")]) {
    el.style.width = `${w * v.fit * v.zoom}px`;
    el.style.height = `${h * v.fit * v.zoom}px`;
    el.style.left = `${v.panX}px`;
    el.style.top = `${v.panY}px`;
  }
  $("zoom-reset").textContent = v.zoom === 1 ? "Zoom 1:1" : `Zoom ${v.zoom.toFixed(1)}x (reset)`;
}

function clampPan() {
  const v = editor.view;
  const { width: w, height: h } = editor.state;
  const sw = w * v.fit, sh = h * v.fit;
  v.panX = Math.min(0, Math.max(sw - sw * v.zoom, v.panX));
  v.panY = Math.min(0, Math.max(sh - sh * v.zoom, v.panY));
}

function zoomAt(factor, clientX, clientY, stage) {
  // Zoom about the point under the cursor: it stays under the cursor.
  if (!editor.state) return;
  const v = editor.view;
  const zoom = Math.min(16, Math.max(1, v.zoom * factor));
  const rect = stage.getBoundingClientRect();
  const sx = clientX - rect.left, sy = clientY - rect.top;
  v.panX = sx - ((sx - v.panX) * zoom) / v.zoom;
  v.panY = sy - ((sy - v.panY) * zoom) / v.zoom;
  v.zoom = zoom;
  clampPan();
  applyView();
}

// ---------------------------------------------------------------------------- drawing

function displayColours(classes) {
  // The Cityscapes table repeats colours (five blacks): repeats get a distinct hue of their own.
  const seen = new Set();
  return classes.map((c, i) => {
    let rgb = c.color;
    if (seen.has(rgb.join(","))) {
      const hue = (i * 137.508) % 360;
      rgb = hslToRgb(hue, 0.45, 0.3 + 0.1 * (i % 3));
    }
    seen.add(rgb.join(","));
    return rgb;
  });
}

function hslToRgb(hue, s, l) {
  const k = (n) => (n + hue / 30) % 12;
  const a = s * Math.min(l, 1 - l);
  const f = (n) => l - a * Math.max(-1, Math.min(k(n) - 3, Math.min(9 - k(n), 1)));
  return [f(0), f(8), f(4)].map((x) => Math.round(x * 255));
}

function drawLabels() {
  const canvas = $("label-canvas");
  const ctx = canvas.getContext("2d");
  const { width: w, height: h } = editor.state;
  const img = ctx.createImageData(w, h);
  const px = img.data;
  const inst = editor.inst;
  const colours = editor.colours;
  const g = editor.gesture;
  const moving = g && g.kind === "move" && (g.dy || g.dx) ? g : null;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = y * w + x;
      const id = inst[i];
      const colour = colours[editor.classOf.get(id)] || [0, 0, 0];
      let [r, gg, b] = colour;
      const edge = (x + 1 < w && inst[i + 1] !== id) || (y + 1 < h && inst[i + w] !== id) ||
                   (x > 0 && inst[i - 1] !== id) || (y > 0 && inst[i - w] !== id);
      if (id === editor.selected) {
        if (edge) { r = 255; gg = 221; b = 0; } else { r = (r + 255) >> 1; gg = (gg + 255) >> 1; b = (b + 255) >> 1; }
      } else if (edge) {
        r >>= 2; gg >>= 2; b >>= 2;
      }
      px[4 * i] = r; px[4 * i + 1] = gg; px[4 * i + 2] = b; px[4 * i + 3] = 255;
    }
  }
  if (moving) {
    // Preview: the selected object's pixels at their new place.
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        if (inst[y * w + x] !== editor.selected) continue;
        const ty = y + moving.dy, tx = x + moving.dx;
        if (ty < 0 || ty >= h || tx < 0 || tx >= w) continue;
        const j = 4 * (ty * w + tx);
        px[j] = 255; px[j + 1] = 221; px[j + 2] = 0;
      }
    }
  }
  if (g && g.mask) {
    const c = colours[editor.currentClass] || [255, 255, 255];
    for (let i = 0; i < w * h; i++) {
      if (g.mask[i]) { px[4 * i] = c[0]; px[4 * i + 1] = c[1]; px[4 * i + 2] = c[2]; }
    }
  }
  ctx.putImageData(img, 0, 0);
  editor.base = img;
  if (g && g.kind === "polygon") {
    const pts = g.hover ? [...g.points, g.hover] : g.points;
    ctx.beginPath();
    pts.forEach(([y, x], i) => (i ? ctx.lineTo(x + 0.5, y + 0.5) : ctx.moveTo(x + 0.5, y + 0.5)));
    ctx.closePath();
    ctx.fillStyle = "rgba(255, 221, 0, 0.35)";
    ctx.fill();
    ctx.lineWidth = Math.max(0.5, 1 / (editor.view.fit * editor.view.zoom));
    ctx.strokeStyle = "#ffdd00";
    ctx.stroke();
  }
  if (g && g.kind === "rect" && g.rect) {
    const [y0, x0, y1, x1] = g.rect;
    ctx.strokeStyle = "#ffdd00";
    ctx.lineWidth = 1;
    ctx.strokeRect(x0 + 0.5, y0 + 0.5, Math.max(0, x1 - x0 - 1), Math.max(0, y1 - y0 - 1));
  }
}

function drawBrushCursor(y, x) {
  // The brush's footprint under the pointer (paint / add-brush tools), drawn over the last map.
  if (!editor.base) return;
  const ctx = $("label-canvas").getContext("2d");
  ctx.putImageData(editor.base, 0, 0);
  if (y === null) return;
  ctx.beginPath();
  ctx.arc(x + 0.5, y + 0.5, brushRadius() + 0.5, 0, 2 * Math.PI);
  ctx.lineWidth = Math.max(0.5, 1 / (editor.view.fit * editor.view.zoom));
  ctx.strokeStyle = "#fff";
  ctx.stroke();
}

function isObject(id) {
  return id !== null && id >= 1000;  // the Cityscapes convention: stuff regions keep their class id
}

function showSelection() {
  const id = editor.selected;
  const row = id === null ? null : editor.rows.get(id);
  $("sel-id").textContent = row ? `#${row.id}` : "none";
  $("sel-class").textContent = row ? row.class_name : "";
  $("sel-cluster").textContent = row && row.cluster !== null ? `cluster ${row.cluster}` : "";
  const object = Boolean(row) && isObject(row.id);
  for (const b of ["delete", "flip", "shrink", "grow"]) $(b).disabled = !object;
  const reason = row && !object ? OBJECT_OPS_REASON(row) : "";
  $("object-actions").title = reason;
  $("sel-note").textContent = reason;
  const k = row ? editor.info.clusters[String(row.class)] || 0 : 0;
  const showAppearance = editor.info.uses_features && row && k > 0;
  $("appearance").hidden = !showAppearance;
  $("random").disabled = !showAppearance;
  if (!showAppearance) {
    $("swatches").textContent = "";
    editor.swatchesFor = null;
    delete $("swatches").dataset.instance;
  } else if (editor.swatchesFor !== `${id}:${row.class}`) {
    // Asked for once per selection (a cluster's look barely depends on where the object stands),
    // and only once the edit queue is empty.
    editor.swatchesFor = `${id}:${row.class}`;
    $("swatches").textContent = "clusters render once the edits are done ...";
    delete $("swatches").dataset.instance;
    pumpSwatches();
  } else {
    for (const b of $("swatches").children) b.classList.toggle("current", Number(b.dataset.cluster) === row.cluster);
  }
  showColour(row);
  highlightPalette();
}

function hexColour(rgb) {
  return `#${rgb.map((c) => c.toString(16).padStart(2, "0")).join("")}`;
}

function showColour(row) {
  // Colour-anchored models only (info.colour_features): the input starts at the colour the
  // object's feature asks for, and a picked colour becomes a set_colour edit.
  const show = Boolean(editor.info.colour_features && row && row.colour);
  $("colour-control").hidden = !show;
  if (show) $("colour").value = hexColour(row.colour);
}

function pickColour() {
  const row = editor.rows.get(editor.selected);
  if (!row) return;
  const hex = $("colour").value;
  const rgb = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  edit({ op: "set_colour", instance: row.id, rgb });
}

// ---------------------------------------------------------------------------- swatches

const swatchRequest = { controller: null, key: null };

function abortSwatches() {
  if (swatchRequest.controller) swatchRequest.controller.abort();
}

function setSwatchesBusy(on) {
  document.body.dataset.swatches = on ? "1" : "";
}

async function pumpSwatches() {
  // Ask for the wanted swatches if no edit is queued and none are on the way.
  const key = editor.swatchesFor;
  const box = $("swatches");
  if (!key || editor.pending || swatchRequest.controller || box.dataset.instance !== undefined) return;
  const id = Number(key.split(":")[0]);
  const sceneId = editor.state.scene_id;
  const controller = new AbortController();
  swatchRequest.controller = controller;
  setSwatchesBusy(true);
  let data = null;
  try {
    data = await api("GET", `/api/scenes/${sceneId}/swatches?instance=${id}`, undefined, controller.signal);
  } catch (err) {
    // 409 / abort: an edit came first (here or in another tab); asked again once the queue is empty.
    if (err.name !== "AbortError" && err.status !== 409 && editor.swatchesFor === key) {
      showError(err.message);
      box.dataset.instance = "failed";  // not asked again until the selection changes
    }
  } finally {
    swatchRequest.controller = null;
    setSwatchesBusy(false);
  }
  if (data && editor.swatchesFor === key && editor.state.scene_id === sceneId) fillSwatches(id, data);
  if (!editor.pending) setTimeout(pumpSwatches, data ? 0 : 100);  // the selection may have moved on meanwhile
}

function fillSwatches(id, data) {
  const box = $("swatches");
  box.textContent = "";
  const row = editor.rows.get(id);
  for (const s of data.swatches) {
    const button = document.createElement("button");
    const key = s.cluster < 9 ? String(s.cluster + 1) : s.cluster === 9 ? "0" : "";
    button.title = `cluster ${s.cluster}${key ? ` (key ${key})` : ""}`;
    button.dataset.cluster = String(s.cluster);
    if (row && s.cluster === row.cluster) button.classList.add("current");
    const img = document.createElement("img");
    img.src = `data:image/png;base64,${s.png}`;
    img.alt = `cluster ${s.cluster}`;
    button.appendChild(img);
    if (key) {
      const label = document.createElement("span");
      label.className = "key";
      label.textContent = key;
      button.appendChild(label);
    }
    button.addEventListener("click", () => edit({ op: "set_feature", instance: id, cluster: s.cluster }));
    box.appendChild(button);
  }
  box.dataset.instance = String(id);
  box.dataset.version = String(editor.version);
}

function setCluster(cluster) {
  const row = editor.rows.get(editor.selected);
  const k = row ? editor.info.clusters[String(row.class)] || 0 : 0;
  if (!row || !editor.info.uses_features) return;
  if (cluster >= k) return showError(`${row.class_name} has ${k} clusters (keys 1-${Math.min(k, 9)}${k > 9 ? ", 0" : ""})`);
  edit({ op: "set_feature", instance: row.id, cluster });
}

// ---------------------------------------------------------------------------- palette

function buildPalette() {
  const box = $("palette");
  const groups = [["Objects (things)", (c) => c.thing], ["Regions (stuff)", (c) => !c.thing]];
  for (const [title, member] of groups) {
    const heading = document.createElement("h4");
    heading.textContent = title;
    const chips = document.createElement("div");
    chips.className = "chips";
    for (const c of editor.info.classes) {
      if (!member(c) || (c.name.startsWith("class ") && !c.thing)) continue;  // ids without a name in this label set
      const button = document.createElement("button");
      const chip = document.createElement("span");
      chip.className = "chip";
      chip.style.background = `rgb(${editor.colours[c.id].join(",")})`;
      button.append(chip, c.name);
      button.title = `${c.id} ${c.name}${c.thing ? " (object class)" : " (stuff)"}`;
      button.dataset.classId = String(c.id);
      button.dataset.name = c.name.toLowerCase();
      if (c.thing) button.classList.add("thing");
      button.addEventListener("click", () => pickClass(c.id));
      chips.appendChild(button);
    }
    box.append(heading, chips);
  }
  $("class-search").addEventListener("input", filterPalette);
  highlightPalette();
}

function filterPalette() {
  const query = $("class-search").value.trim().toLowerCase();
  for (const b of $("palette").querySelectorAll("button")) {
    b.hidden = Boolean(query) && !b.dataset.name.includes(query) && b.dataset.classId !== query;
  }
}

function highlightPalette() {
  for (const b of $("palette").querySelectorAll("button")) {
    b.classList.toggle("current", Number(b.dataset.classId) === editor.currentClass);
  }
  const c = editor.info.classes[editor.currentClass];
  $("current-class").textContent = c ? `paint / add class: ${c.name}` : "";
}

function pickClass(classId) {
  editor.currentClass = classId;
  highlightPalette();
  if (tool() === "select" && editor.selected !== null && editor.classOf.get(editor.selected) !== classId) {
    edit({ op: "relabel", instance: editor.selected, to: classId });
  }
}

// ---------------------------------------------------------------------------- gestures

function tool() {
  return document.querySelector("input[name=tool]:checked").value;
}

function mapPoint(event) {
  // Client coordinates -> map pixel, through whatever zoom and pan the canvas is shown at.
  const canvas = $("label-canvas");
  const rect = canvas.getBoundingClientRect();
  const x = Math.floor(((event.clientX - rect.left) * canvas.width) / rect.width);
  const y = Math.floor(((event.clientY - rect.top) * canvas.height) / rect.height);
  return [Math.min(Math.max(y, 0), canvas.height - 1), Math.min(Math.max(x, 0), canvas.width - 1)];
}

function stampDisc(mask, y, x, r) {
  const { width: w, height: h } = editor.state;
  for (let yy = Math.max(0, Math.floor(y - r)); yy <= Math.min(h - 1, Math.ceil(y + r)); yy++) {
    for (let xx = Math.max(0, Math.floor(x - r)); xx <= Math.min(w - 1, Math.ceil(x + r)); xx++) {
      if ((yy - y) ** 2 + (xx - x) ** 2 <= r * r) mask[yy * w + xx] = 1;
    }
  }
}

function brushRadius() {
  const r = Number($("brush-radius").value);
  return Number.isFinite(r) && r > 0 ? r : 3;
}

function isThing(classId) {
  const c = editor.info.classes[classId];
  return Boolean(c && c.thing);
}

function onPointerDown(event) {
  if (!editor.state) return;
  const canvas = $("label-canvas");
  // preventDefault keeps the page from selecting text while dragging; it also keeps focus where
  // it was, so the canvas takes it here: the shortcuts then act on the scene, not a text field.
  event.preventDefault();
  canvas.focus({ preventScroll: true });
  if (event.button === 1 || (event.button === 0 && event.altKey)) {
    editor.gesture = { kind: "pan", cx: event.clientX, cy: event.clientY, panX: editor.view.panX, panY: editor.view.panY };
    canvas.setPointerCapture(event.pointerId);
    return;
  }
  if (event.button !== 0) return;
  canvas.setPointerCapture(event.pointerId);
  const [y, x] = mapPoint(event);
  const t = tool();
  if (t.startsWith("add-") && !isThing(editor.currentClass)) {
    return showError("pick an object class (round palette chips) to add objects");
  }
  if (t.endsWith("-fill")) {
    edit({ op: t === "add-fill" ? "add_object" : "paint", class: editor.currentClass, fill: [y, x] });
  } else if (t.endsWith("-polygon")) {
    // Click the vertices; a double click, Enter or a click on the first vertex closes it; Esc cancels.
    const g = editor.gesture && editor.gesture.kind === "polygon" ? editor.gesture : null;
    if (!g) {
      editor.gesture = { kind: "polygon", points: [[y, x]], hover: null };
    } else {
      const [fy, fx] = g.points[0];
      const [ly, lx] = g.points[g.points.length - 1];
      const closes = g.points.length >= 3 && Math.abs(fy - y) <= 1 && Math.abs(fx - x) <= 1;
      if (!closes && (ly !== y || lx !== x)) g.points.push([y, x]);
      if (closes || event.detail >= 2) return finishPolygon();
    }
    drawLabels();
  } else if (t === "select") {
    const id = editor.inst[y * editor.state.width + x];
    editor.selected = id;
    // Objects can be dragged; stuff regions are only selected.
    editor.gesture = isObject(id) ? { kind: "move", y, x, dy: 0, dx: 0 } : null;
    drawLabels();
    showSelection();
  } else if (t === "add-rect") {
    editor.gesture = { kind: "rect", y, x, rect: [y, x, y + 1, x + 1] };
  } else {
    const mask = new Uint8Array(editor.state.width * editor.state.height);
    const r = brushRadius();
    stampDisc(mask, y, x, r);
    editor.gesture = { kind: "stroke", points: [[y, x]], mask, radius: r };
    drawLabels();
  }
}

function onPointerMove(event) {
  const g = editor.gesture;
  if (!editor.state) return;
  const [y, x] = mapPoint(event);
  showLegend(y, x);
  if (!g) {
    if (tool() === "paint" || tool() === "add-brush") drawBrushCursor(y, x);
    return;
  }
  if (g.kind === "polygon") {
    g.hover = [y, x];
    drawLabels();
    return;
  }
  if (g.kind === "pan") {
    editor.view.panX = g.panX + event.clientX - g.cx;
    editor.view.panY = g.panY + event.clientY - g.cy;
    clampPan();
    applyView();
    return;
  }
  if (g.kind === "move") {
    g.dy = y - g.y;
    g.dx = x - g.x;
  } else if (g.kind === "rect") {
    g.rect = [Math.min(g.y, y), Math.min(g.x, x), Math.max(g.y, y) + 1, Math.max(g.x, x) + 1];
  } else {
    const [py, px] = g.points[g.points.length - 1];
    if (py === y && px === x) return;
    const steps = Math.max(Math.abs(y - py), Math.abs(x - px));
    for (let s = 1; s <= steps; s++) stampDisc(g.mask, py + ((y - py) * s) / steps, px + ((x - px) * s) / steps, g.radius);
    g.points.push([y, x]);
  }
  drawLabels();
}

function onPointerUp() {
  const g = editor.gesture;
  editor.gesture = null;
  if (g && g.kind === "polygon") {
    editor.gesture = g;  // a polygon spans several clicks
    return;
  }
  if (!g || g.kind === "pan") return;
  drawLabels();
  if (g.kind === "move") {
    if (g.dy || g.dx) edit({ op: "move", instance: editor.selected, by: [g.dy, g.dx] });
  } else if (g.kind === "rect") {
    edit({ op: "add_object", class: editor.currentClass, rect: g.rect });
  } else {
    const region = { radius: g.radius, points: g.points };
    const op = tool() === "add-brush" ? "add_object" : "paint";
    edit({ op, class: editor.currentClass, brush: region });
  }
}

function finishPolygon() {
  const g = editor.gesture;
  editor.gesture = null;
  drawLabels();
  if (!g || g.points.length < 3) return showError("a polygon needs 3 or more vertices");
  const op = tool() === "add-polygon" ? "add_object" : "paint";
  edit({ op, class: editor.currentClass, polygon: g.points });
}

function showLegend(y, x) {
  // Legend on hover: the class and region under the pointer.
  const id = editor.inst[y * editor.state.width + x];
  const row = editor.rows.get(id);
  $("legend").textContent = row ? `${row.class_name} #${id}${isObject(id) ? "" : " (stuff)"} at (${y}, ${x})` : "";
}

// ---------------------------------------------------------------------------- keyboard

function objectAction(op) {
  // Delete / flip / resize / nudge the selected object; for a stuff region, say why not.
  const row = editor.rows.get(editor.selected);
  if (!row) return;
  if (!isObject(row.id)) return showError(OBJECT_OPS_REASON(row));
  edit({ ...op, instance: row.id });
}

function onKey(e) {
  const t = e.target;
  const typing = (t.tagName === "INPUT" && !["radio", "checkbox", "button", "submit", "color"].includes(t.type)) ||
                 t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable;
  if (typing) return;  // text fields keep their own keys (Enter, Ctrl+Z, digits, Backspace)
  const mod = e.ctrlKey || e.metaKey;
  const key = e.key;
  let handled = true;
  const polygon = editor.gesture && editor.gesture.kind === "polygon";
  if (polygon && key === "Enter") finishPolygon();
  else if (polygon && key === "Escape") { editor.gesture = null; drawLabels(); }
  else if (mod && key.toLowerCase() === "z") history(e.shiftKey ? "redo" : "undo");
  else if (mod && key.toLowerCase() === "y") history("redo");
  else if (mod || e.altKey) handled = false;
  else if (key === "Delete" || key === "Backspace") objectAction({ op: "delete" });
  else if (key === "f" || key === "F") objectAction({ op: "flip" });
  else if (key === "+" || key === "=") objectAction({ op: "resize", scale: 1.25 });
  else if (key === "-" || key === "_") objectAction({ op: "resize", scale: 0.8 });
  else if (key.startsWith("Arrow")) {
    const step = e.shiftKey ? 10 : 1;
    const by = { ArrowUp: [-step, 0], ArrowDown: [step, 0], ArrowLeft: [0, -step], ArrowRight: [0, step] }[key];
    objectAction({ op: "move", by });
  } else if (/^[0-9]$/.test(key)) setCluster(key === "0" ? 9 : Number(key) - 1);
  else if (key === "Escape") {
    editor.selected = null;
    if (editor.state) { drawLabels(); showSelection(); }
  } else handled = false;
  if (handled) e.preventDefault();
}

// ---------------------------------------------------------------------------- loading

function loadIndex(index) {
  return enqueue(async () => {
    editor.selected = null;
    editor.warnings = [];
    setState(await api("POST", "/api/scenes", { index, local: $("local").checked }));
  });
}

function loadUpload() {
  const label = $("upload-label").files[0];
  const inst = $("upload-inst").files[0];
  if (!label) return showError("choose a label PNG (class ids) and, optionally, an instance PNG");
  const form = new FormData();
  form.append("label", label);
  if (inst) form.append("inst", inst);
  form.append("local", $("local").checked ? "true" : "false");
  return enqueue(async () => {
    const data = await api("POST", "/api/scenes", form);
    editor.selected = null;
    editor.warnings = (data.warnings || []).map((w) => `upload: ${w}`);
    setState(data);
  });
}

const HINTS = {
  "select": "click an object to select it, drag to move it; keys act on the selection",
  "paint": "drag to paint the chosen class",
  "add-rect": "drag a rectangle to add an object of the chosen class",
  "add-brush": "drag to draw a new object of the chosen class",
  "paint-polygon": "click the vertices; double click, Enter or the first vertex closes; Esc cancels",
  "add-polygon": "click the vertices of a new object; double click, Enter or the first vertex closes",
  "paint-fill": "click a region: its connected part takes the chosen class",
  "add-fill": "click a region: its connected part becomes a new object of the chosen class",
};

async function start() {
  try {
    editor.info = await api("GET", "/api/info");
  } catch (err) {
    return showError(err.message);
  }
  editor.colours = displayColours(editor.info.classes);
  buildPalette();
  const n = editor.info.test_scenes;
  if (n) $("scene-index").max = String(n - 1);
  $("load-index").addEventListener("submit", (e) => { e.preventDefault(); loadIndex(Number($("scene-index").value)); });
  $("load-upload").addEventListener("submit", (e) => { e.preventDefault(); loadUpload(); });
  const canvas = $("label-canvas");
  canvas.addEventListener("pointerdown", onPointerDown);
  canvas.addEventListener("pointermove", onPointerMove);
  canvas.addEventListener("pointerup", onPointerUp);
  canvas.addEventListener("pointercancel", () => { editor.gesture = null; drawLabels(); });
  canvas.addEventListener("pointerleave", () => { $("legend").textContent = ""; if (!editor.gesture) drawBrushCursor(null); });
  for (const stage of [$("label-stage"), $("image-stage")]) {
    stage.addEventListener("wheel", (e) => { e.preventDefault(); zoomAt(Math.exp(-e.deltaY / 300), e.clientX, e.clientY, stage); },
                           { passive: false });
  }
  // The image pans too (Alt+drag or the middle button); both views share one zoom and pan.
  const image = $("image");
  image.addEventListener("dragstart", (e) => e.preventDefault());
  image.addEventListener("pointerdown", (e) => {
    if (!editor.state || !(e.button === 1 || (e.button === 0 && e.altKey))) return;
    e.preventDefault();
    image.setPointerCapture(e.pointerId);
    editor.gesture = { kind: "pan", cx: e.clientX, cy: e.clientY, panX: editor.view.panX, panY: editor.view.panY };
  });
  image.addEventListener("pointermove", (e) => {
    const g = editor.gesture;
    if (!g || g.kind !== "pan") return;
    editor.view.panX = g.panX + e.clientX - g.cx;
    editor.view.panY = g.panY + e.clientY - g.cy;
    clampPan();
    applyView();
  });
  image.addEventListener("pointerup", () => { if (editor.gesture && editor.gesture.kind === "pan") editor.gesture = null; });
  $("zoom-reset").addEventListener("click", () => { Object.assign(editor.view, { zoom: 1, panX: 0, panY: 0 }); applyView(); });
  $("delete").addEventListener("click", () => objectAction({ op: "delete" }));
  $("flip").addEventListener("click", () => objectAction({ op: "flip" }));
  $("shrink").addEventListener("click", () => objectAction({ op: "resize", scale: 0.8 }));
  $("grow").addEventListener("click", () => objectAction({ op: "resize", scale: 1.25 }));
  $("random").addEventListener("click", () => {
    const row = editor.rows.get(editor.selected);
    const k = row ? editor.info.clusters[String(row.class)] || 0 : 0;
    if (!k) return;
    let cluster = Math.floor(Math.random() * k);
    if (k > 1 && cluster === row.cluster) cluster = (cluster + 1 + Math.floor(Math.random() * (k - 1))) % k;
    edit({ op: "set_feature", instance: row.id, cluster });
  });
  $("colour").addEventListener("change", pickColour);  // "change": once the pick is made, not while dragging
  $("local").checked = editor.info.local !== false;
  $("local").addEventListener("change", () => setLocal($("local").checked));
  $("undo").addEventListener("click", () => history("undo"));
  $("redo").addEventListener("click", () => history("redo"));
  $("dismiss").addEventListener("click", () => { $("error").textContent = ""; editor.warnings = []; showWarnings(); });
  for (const radio of document.querySelectorAll("input[name=tool]")) {
    radio.addEventListener("change", () => {
      $("tool-hint").textContent = HINTS[tool()];
      if (editor.gesture && editor.gesture.kind === "polygon") editor.gesture = null;
      if (editor.state) drawLabels();
    });
  }
  $("tool-hint").textContent = HINTS[tool()];
  document.addEventListener("keydown", onKey);
  window.addEventListener("resize", layout);
  if (n) loadIndex(0);
}

start();
