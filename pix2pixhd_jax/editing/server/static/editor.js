// The editor page: draws the label map from the instance ids the API returns, turns mouse
// gestures into edits of the script vocabulary, and shows what the server renders.
// Everything goes through the HTTP API (see pix2pixhd_jax/editing/server/app.py); requests run one at a time.
"use strict";

const $ = (id) => document.getElementById(id);

const editor = {
  info: null,        // GET /api/info
  state: null,       // the last scene response
  inst: null,        // Uint16Array of instance ids, row-major
  classOf: new Map(),  // instance id -> class id
  rows: new Map(),     // instance id -> row of state.instances
  selected: null,    // selected instance id
  currentClass: 26,  // class for paint / add-object tools and the palette highlight
  swatchesFor: null, // instance id whose swatches are shown
  version: 0,        // scene responses received (tests wait on this)
  busy: false,
  errors: 0,
  gesture: null,     // the drag / stroke / rectangle in progress
};
window.editor = editor;

// ---------------------------------------------------------------------------- API calls

let queue = Promise.resolve();

function enqueue(task) {
  // One request at a time, in the order the user made them.
  queue = queue.then(async () => {
    editor.busy = true;
    document.body.dataset.busy = "1";
    try {
      await task();
    } catch (err) {
      showError(err.message);
    } finally {
      editor.busy = false;
      document.body.dataset.busy = "";
    }
  });
  return queue;
}

async function api(method, path, body) {
  const options = { method };
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
    throw new Error(`${method} ${path}: HTTP ${response.status}`);
  }
  if (!response.ok) {
    throw new Error(data.error || `${method} ${path}: HTTP ${response.status}`);
  }
  data.roundTripMs = performance.now() - started;
  return data;
}

function showError(message) {
  editor.errors += 1;
  $("error").textContent = message;
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

// ---------------------------------------------------------------------------- state

function decodeIds(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Uint16Array(bytes.buffer);  // little-endian, as every browser's typed arrays
}

function setState(data) {
  editor.state = data;
  editor.inst = decodeIds(data.inst_raw);
  editor.classOf = new Map(data.instances.map((r) => [r.id, r.class]));
  editor.rows = new Map(data.instances.map((r) => [r.id, r]));
  if (editor.selected !== null && !editor.rows.has(editor.selected)) editor.selected = null;
  const canvas = $("label-canvas");
  if (canvas.width !== data.width || canvas.height !== data.height) {
    canvas.width = data.width;
    canvas.height = data.height;
    const scale = Math.max(1, Math.floor(512 / data.width));
    canvas.style.width = `${data.width * scale}px`;
    $("image").style.width = `${data.width * scale}px`;
  }
  $("image").src = `data:image/png;base64,${data.image_png}`;
  $("dl-image").href = $("image").src;
  $("dl-label").href = `data:image/png;base64,${data.label_png}`;
  $("dl-inst").href = `data:image/png;base64,${data.inst_png}`;
  $("dl-script").href = `/api/scenes/${data.scene_id}/script`;
  $("undo").disabled = !data.can_undo;
  $("redo").disabled = !data.can_redo;
  $("edit-count").textContent = `${data.num_edits} edits`;
  $("local").checked = Boolean(data.local);
  const render = data.render_ms > 0 ? `render ${data.render_ms.toFixed(0)} ms, ` : "no render (history), ";
  $("render-time").textContent =
    `(${render}server ${data.server_ms.toFixed(0)} ms, round trip ${data.roundTripMs.toFixed(0)} ms)`;
  $("error").textContent = "";
  editor.version += 1;
  drawLabels();
  showSelection();
}

// ---------------------------------------------------------------------------- drawing

function drawLabels() {
  const canvas = $("label-canvas");
  const ctx = canvas.getContext("2d");
  const { width: w, height: h } = editor.state;
  const img = ctx.createImageData(w, h);
  const px = img.data;
  const inst = editor.inst;
  const colours = editor.info.classes.map((c) => c.color);
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
  if (g && g.kind === "rect" && g.rect) {
    const [y0, x0, y1, x1] = g.rect;
    ctx.strokeStyle = "#ffdd00";
    ctx.lineWidth = 1;
    ctx.strokeRect(x0 + 0.5, y0 + 0.5, Math.max(0, x1 - x0 - 1), Math.max(0, y1 - y0 - 1));
  }
}

function showSelection() {
  const id = editor.selected;
  const row = id === null ? null : editor.rows.get(id);
  $("sel-id").textContent = row ? `#${row.id}` : "none";
  $("sel-class").textContent = row ? row.class_name : "";
  $("sel-cluster").textContent = row && row.cluster !== null ? `cluster ${row.cluster}` : "";
  for (const b of ["delete", "flip", "shrink", "grow"]) $(b).disabled = !row;
  const k = row ? editor.info.clusters[String(row.class)] || 0 : 0;
  const showAppearance = editor.info.uses_features && row && k > 0;
  $("appearance").hidden = !showAppearance;
  $("random").disabled = !showAppearance;
  if (!showAppearance) {
    $("swatches").textContent = "";
    editor.swatchesFor = null;
  } else if (editor.swatchesFor !== `${id}:${row.class}`) {
    // Rendered once per selection: a cluster's look barely depends on where the object stands.
    loadSwatches(id, row.class);
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

async function loadSwatches(id, classId) {
  editor.swatchesFor = `${id}:${classId}`;
  const sceneId = editor.state.scene_id;
  $("swatches").textContent = "rendering clusters ...";
  let data;
  try {
    data = await api("GET", `/api/scenes/${sceneId}/swatches?instance=${id}`);
  } catch (err) {
    showError(err.message);
    return;
  }
  if (editor.swatchesFor !== `${id}:${classId}` || editor.state.scene_id !== sceneId) return;  // selection moved on
  const box = $("swatches");
  box.textContent = "";
  for (const s of data.swatches) {
    const button = document.createElement("button");
    button.title = `cluster ${s.cluster}`;
    button.dataset.cluster = String(s.cluster);
    const row = editor.rows.get(id);
    if (row && s.cluster === row.cluster) button.classList.add("current");
    const img = document.createElement("img");
    img.src = `data:image/png;base64,${s.png}`;
    img.alt = `cluster ${s.cluster}`;
    button.appendChild(img);
    button.addEventListener("click", () => edit({ op: "set_feature", instance: id, cluster: s.cluster }));
    box.appendChild(button);
  }
  box.dataset.instance = String(id);
  box.dataset.version = String(editor.version);
}

function buildPalette() {
  const box = $("palette");
  for (const c of editor.info.classes) {
    if (c.name.startsWith("class ") && !c.thing) continue;  // ids without a name in this label set
    const button = document.createElement("button");
    button.style.background = `rgb(${c.color.join(",")})`;
    button.title = `${c.id} ${c.name}${c.thing ? " (object class)" : ""}`;
    button.dataset.classId = String(c.id);
    if (c.thing) button.classList.add("thing");
    button.addEventListener("click", () => pickClass(c.id));
    box.appendChild(button);
  }
  highlightPalette();
}

function highlightPalette() {
  for (const b of $("palette").children) {
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
  if (!editor.state || event.button !== 0) return;
  event.preventDefault();
  $("label-canvas").setPointerCapture(event.pointerId);
  const [y, x] = mapPoint(event);
  const t = tool();
  if (t === "select") {
    const id = editor.inst[y * editor.state.width + x];
    editor.selected = id;
    // Objects (ids >= 1000) can be dragged; stuff regions are only selected.
    editor.gesture = id >= 1000 ? { kind: "move", y, x, dy: 0, dx: 0 } : null;
    drawLabels();
    showSelection();
  } else if (t === "add-rect") {
    if (!isThing(editor.currentClass)) return showError("pick an object class (round palette buttons) to add objects");
    editor.gesture = { kind: "rect", y, x, rect: [y, x, y + 1, x + 1] };
  } else {
    if (t === "add-brush" && !isThing(editor.currentClass)) {
      return showError("pick an object class (round palette buttons) to add objects");
    }
    const mask = new Uint8Array(editor.state.width * editor.state.height);
    const r = brushRadius();
    stampDisc(mask, y, x, r);
    editor.gesture = { kind: "stroke", points: [[y, x]], mask, radius: r };
    drawLabels();
  }
}

function onPointerMove(event) {
  const g = editor.gesture;
  if (!g) return;
  const [y, x] = mapPoint(event);
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
  if (!g) return;
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

// ---------------------------------------------------------------------------- loading

function loadIndex(index) {
  return enqueue(async () => {
    editor.selected = null;
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
    editor.selected = null;
    setState(await api("POST", "/api/scenes", form));
  });
}

const HINTS = {
  "select": "click an object to select it, drag to move it",
  "paint": "drag to paint the chosen class",
  "add-rect": "drag a rectangle to add an object of the chosen class",
  "add-brush": "drag to draw a new object of the chosen class",
};

async function start() {
  try {
    editor.info = await api("GET", "/api/info");
  } catch (err) {
    return showError(err.message);
  }
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
  const selected = (op) => () => editor.selected !== null && edit({ ...op, instance: editor.selected });
  $("delete").addEventListener("click", selected({ op: "delete" }));
  $("flip").addEventListener("click", selected({ op: "flip" }));
  $("shrink").addEventListener("click", selected({ op: "resize", scale: 0.8 }));
  $("grow").addEventListener("click", selected({ op: "resize", scale: 1.25 }));
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
  for (const radio of document.querySelectorAll("input[name=tool]")) {
    radio.addEventListener("change", () => { $("tool-hint").textContent = HINTS[tool()]; });
  }
  $("tool-hint").textContent = HINTS[tool()];
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" && ["number", "text", "file"].includes(e.target.type)) return;  // typing
    const mod = e.ctrlKey || e.metaKey;
    if (mod && e.key.toLowerCase() === "z") { e.preventDefault(); history(e.shiftKey ? "redo" : "undo"); }
    else if (mod && e.key.toLowerCase() === "y") { e.preventDefault(); history("redo"); }
    else if ((e.key === "Delete" || e.key === "Backspace") && editor.selected !== null) {
      edit({ op: "delete", instance: editor.selected });
    }
  });
  if (n) loadIndex(0);
}

start();
