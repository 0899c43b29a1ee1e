// The annotation page: open an image (embedded once), click and drag to segment objects,
// find concepts, undo and redo, export COCO JSON and a PNG mask. It uses the public API only.
//
// History: every change of the objects (a click, a box, a concept search, a deletion) is a
// new list of object records. A record is never changed once made, except that the mask of
// its prompts fills in when the service answers; so undo and redo show each step's mask
// without asking again. Labels, colours and visibility are kept apart, per object id.

import { Api, ApiError } from "./api.js";
import { datasetCoco, objectsFromCoco } from "./dataset.js";
import { cocoDocument, download, indexMaskPng } from "./export.js";
import { LocalDecoder } from "./local-decoder.js";
import { decodeRle, maskStats } from "./rle.js";
import {
  clearDataset,
  loadDataset,
  saveAnnotations,
  saveCurrent,
  saveFiles,
} from "./storage.js";
import { View } from "./view.js";

const PALETTE = [
  "#f97316",
  "#22d3ee",
  "#a3e635",
  "#e879f9",
  "#facc15",
  "#60a5fa",
  "#f472b6",
  "#34d399",
  "#fb7185",
  "#c084fc",
  "#2dd4bf",
  "#fbbf24",
];
const DRAG_PX = 5; // a press that moves further is a box, not a click
const MIN_BOX_PX = 2;
const KEY_STORAGE = "sam3-serve.api-key";
const HISTORY_LIMIT = 300;
const REQUEST_LOG = 30;

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const view = new View(canvas);
const api = new Api({ onCall: showCall });
const decodeParam = new URLSearchParams(location.search).get("decode");
const local = new LocalDecoder(api, {
  encoding: decodeParam === "int8" ? "int8" : "float16",
  disabled: decodeParam === "server" ? "the page's address asks for it (?decode=server)" : null,
});

/**
 * @typedef {object} ObjectRecord
 * @property {number} id
 * @property {Array<{x: number, y: number, positive: boolean}>} points image pixels
 * @property {{x0: number, y0: number, x1: number, y1: number}|null} box image pixels
 * @property {{size: number[], counts: string}|null} rle the mask, COCO RLE
 * @property {number|null} score
 * @property {boolean} pending a request for these prompts is on its way
 * @property {string|null} error
 */

const state = {
  image: null, // the dataset's open entry: {name, blob, dataUrl, id, width, height, bitmap, saved}
  dataset: [], // every image opened together, in order
  index: 0,
  /** @type {ObjectRecord[][]} */
  history: [[]],
  at: 0,
  selected: null,
  meta: new Map(), // id -> {label, colour, visible}
  nextId: 1,
  embedding: null, // the embed in flight (a Promise)
  drag: null,
  cursor: null, // keyboard cursor, image pixels
  lastLabel: "object",
  findingConcept: false,
};

const objects = () => state.history[state.at];
const selectedRecord = () => objects().find((object) => object.id === state.selected) ?? null;
const round1 = (value) => Math.round(value * 10) / 10;

function commit(next) {
  state.history = state.history.slice(Math.max(0, state.at + 1 - HISTORY_LIMIT), state.at + 1);
  state.history.push(next);
  state.at = state.history.length - 1;
  render();
}

function createObject(label = state.lastLabel) {
  const id = state.nextId++;
  state.meta.set(id, { label, colour: PALETTE[(id - 1) % PALETTE.length], visible: true });
  return { id, points: [], box: null, rle: null, score: null, pending: false, error: null };
}

function select(id) {
  state.selected = id;
  render();
}

// ---- status and request log ----------------------------------------------------------

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function describe(call) {
  if (call.status === 404 && call.body?.code === "image_not_cached") {
    return [`${call.route}: the image is no longer cached on its replica; sending it again`, false];
  }
  if (call.status >= 400) {
    const code = call.body?.code ? ` ${call.body.code}` : "";
    let text = `${call.route}: ${call.status}${code}: ${call.body?.message ?? ""}`;
    if (call.status === 401) text += " (enter the service's API key above)";
    return [text, true];
  }
  const parts = [call.route, `${Math.round(call.ms)} ms`];
  if (call.serviceMs !== null) parts.push(`service ${Math.round(call.serviceMs)} ms`);
  if (call.cache) parts.push(`embedding ${call.cache}`);
  if (call.logits) parts.push(`logits ${call.logits}`);
  if (call.replica) parts.push(`replica ${call.replica}`);
  if (call.note) parts.push(call.note);
  return [parts.join(" · "), false];
}

const PREFETCHED = "prefetched for the next image";

function showCall(call) {
  const [text, isError] = describe(call);
  // A prefetch runs behind the image being annotated: its answer goes to the log only.
  if (isError || call.note !== PREFETCHED) setStatus(text, isError);
  if (call.status === 401) $("api-key").focus();
  const item = document.createElement("li");
  item.textContent = `${call.status} ${text}`;
  const log = $("requests");
  log.prepend(item);
  while (log.children.length > REQUEST_LOG) log.lastElementChild.remove();
}

function showError(error) {
  // HTTP errors were shown with their call; this is for the rest (no service, a bug).
  if (error instanceof ApiError && error.status > 0) return;
  setStatus(error.message, true);
}

function showProgress(text, fraction) {
  $("progress").hidden = text === null;
  if (text === null) return;
  $("progress-text").textContent = text;
  const bar = $("progress-bar");
  if (fraction === null) bar.removeAttribute("value");
  else bar.value = fraction;
}

// ---- the image -------------------------------------------------------------------------

function readDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

/** A dataset entry: an image file and, once shown, its pixels, id and objects. */
function newEntry(name, blob, saved = null) {
  return { name, blob, dataUrl: null, id: null, width: 0, height: 0, bitmap: null, saved };
}

/** The open image's objects as plain data (the history's current step; undo is not kept). */
function snapshot() {
  const current = objects().map((object) => ({ ...object, pending: false }));
  const ids = new Set(current.map((object) => object.id));
  const meta = [...state.meta].filter(([id]) => ids.has(id)).map(([id, m]) => [id, { ...m }]);
  return { objects: current, meta, nextId: state.nextId };
}

function restore(saved) {
  state.history = [saved?.objects.map((object) => ({ ...object })) ?? []];
  state.at = 0;
  state.meta = new Map((saved?.meta ?? []).map(([id, m]) => [id, { ...m }]));
  state.nextId = saved?.nextId ?? 1;
  state.selected = null;
  // The list's rows are bound to their object's meta: another image's object 1 is another.
  for (const item of rows.values()) item.remove();
  rows.clear();
}

// One debounced save per image: moving to the next image must not cancel the last one's.
const saving = new Map();
function cancelSaves() {
  for (const timer of saving.values()) clearTimeout(timer);
  saving.clear();
}
/** Keep the open image's objects (in the entry, and in IndexedDB shortly after). */
function keep() {
  if (!state.image) return;
  state.image.saved = snapshot();
  const position = state.index;
  const saved = state.image.saved;
  clearTimeout(saving.get(position));
  saving.set(
    position,
    setTimeout(() => {
      saving.delete(position);
      saveAnnotations(position, saved).catch(showError);
    }, 150),
  );
}

/**
 * Open files: images become the dataset (replacing the one open, and kept in IndexedDB); a
 * COCO JSON file adds its objects to the dataset's images of the same file name.
 */
async function openFiles(fileList) {
  const files = [...fileList];
  const isJson = (file) => /\.json$/i.test(file.name) || file.type === "application/json";
  // A folder brings whatever it holds: its images only (a file of no known type is tried).
  const isImage = (file) => file.type.startsWith("image/") || file.type === "";
  const images = files.filter((file) => !isJson(file) && isImage(file));
  if (images.length) {
    images.sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
    cancelSaves();
    state.image = null;
    state.dataset = images.map((file) => newEntry(file.name, file));
    saveFiles(images).catch(showError);
    await show(0);
  }
  for (const file of files.filter(isJson)) await continueFromCoco(file);
}

/** Show the dataset's image `index` with its objects; prefetch the next one's embedding. */
async function show(index) {
  if (index < 0 || index >= state.dataset.length) return;
  keep();
  const entry = state.dataset[index];
  if (!entry.bitmap) {
    try {
      entry.bitmap = await createImageBitmap(entry.blob);
    } catch {
      setStatus(`${entry.name}: this browser cannot display the file as an image`, true);
      return;
    }
    entry.width = entry.bitmap.width;
    entry.height = entry.bitmap.height;
  }
  entry.dataUrl ??= await readDataUrl(entry.blob);
  state.index = index;
  state.image = entry;
  restore(entry.saved);
  state.cursor = null;
  state.embedding = null;
  view.dimmed = false;
  showProgress(null);
  view.setImage(entry);
  view.fit();
  $("image-info").textContent = `${entry.name} · ${entry.width}×${entry.height}`;
  saveCurrent(index).catch(showError);
  render();
  ensureEmbedded()
    .then(() => prefetch(index + 1))
    .catch(showError);
}

/** The next image's embedding fetched while this one is annotated: its first click is instant. */
async function prefetch(index) {
  const entry = state.dataset[index];
  if (!entry || entry.id || entry.prefetch) return;
  entry.dataUrl ??= await readDataUrl(entry.blob);
  entry.prefetch = (async () => {
    if ((await local.start()) && !entry.serverReason) {
      return local.load(entry, { prefetch: true });
    }
    const body = { image: { type: "base64", value: entry.dataUrl } };
    return (await api.call("embed_image", body, { note: PREFETCHED })).body.image_id;
  })().then(
    (id) => (entry.id = id),
    () => null,
  );
}

async function continueFromCoco(file) {
  let found;
  try {
    found = objectsFromCoco(JSON.parse(await file.text()));
  } catch (error) {
    setStatus(`${file.name}: not a COCO JSON file (${error.message})`, true);
    return;
  }
  keep();
  let count = 0;
  let images = 0;
  state.dataset.forEach((entry, position) => {
    const objects = found.get(entry.name);
    if (!objects) return;
    const saved = entry.saved ?? { objects: [], meta: [], nextId: 1 };
    for (const object of objects) {
      const id = saved.nextId++;
      const { rle, score, box, label } = object;
      saved.objects.push({ id, points: [], box, rle, score, pending: false, error: null });
      saved.meta.push([id, { label, colour: PALETTE[(id - 1) % PALETTE.length], visible: true }]);
      count += 1;
    }
    images += 1;
    entry.saved = saved;
    saveAnnotations(position, saved).catch(showError);
  });
  if (state.image) restore(state.image.saved);
  render();
  setStatus(`${file.name}: ${count} objects on ${images} of the ${state.dataset.length} images`);
}

async function clearAll() {
  cancelSaves();
  await clearDataset();
  for (const entry of state.dataset) if (entry.id) local.forget(entry.id);
  state.dataset = [];
  state.image = null;
  restore(null);
  view.setImage(null);
  $("image-info").textContent = "no image";
  render();
  setStatus("Cleared: the images and their objects are no longer kept in this browser.");
}

async function restoreKept() {
  let kept;
  try {
    kept = await loadDataset();
  } catch (error) {
    setStatus(`This browser cannot keep the work (IndexedDB: ${error.message})`, true);
    return;
  }
  if (!kept.files.length || state.dataset.length) return;
  state.dataset = kept.files.map((file) => newEntry(file.name, file.blob, file.annotations));
  await show(Math.min(kept.current, state.dataset.length - 1));
  const total = state.dataset.reduce((n, entry) => n + (entry.saved?.objects.length ?? 0), 0);
  setStatus(`Restored ${state.dataset.length} images and ${total} objects kept in this browser.`);
}

/** The image's id once the service has embedded it (embedding it first if need be). */
function ensureEmbedded() {
  const image = state.image;
  if (!image) return Promise.reject(new Error("open an image first"));
  if (image.id) return Promise.resolve(image.id);
  if (!state.embedding) {
    const started = performance.now();
    let uploaded = false;
    const tick = setInterval(() => {
      if (uploaded) {
        const seconds = ((performance.now() - started) / 1000).toFixed(1);
        showProgress(`Embedding the image on the service… ${seconds} s`, null);
      }
    }, 100);
    view.dimmed = true;
    showProgress("Sending the image…", 0);
    setStatus(`embed_image: sending ${image.name} to be embedded…`);
    render();
    const embed = () =>
      api.embed(image.dataUrl, null, (fraction) => {
        uploaded = fraction >= 1;
        if (!uploaded) showProgress(`Sending the image… ${Math.round(fraction * 100)} %`, fraction);
      });
    state.embedding = embedLocally(image, () => (uploaded = true))
      .then((id) => id ?? embed())
      .then((id) => {
        image.id = id;
        if (state.image === image) {
          $("image-info").textContent =
            `${image.name} · ${image.width}×${image.height} · image_id ${id.slice(0, 12)}…`;
          $("image-info").title = id;
        }
        return id;
      })
      .finally(() => {
        clearInterval(tick);
        if (state.image === image) {
          state.embedding = null;
          view.dimmed = false;
          showProgress(null);
          render();
        }
      });
  }
  return state.embedding;
}

/**
 * The image embedded for decoding in this browser: its id, or null where the browser cannot
 * decode (the page then embeds it for the service's decoder; `image.serverReason` says why).
 */
async function embedLocally(image, onSent) {
  if (image.prefetch && (await image.prefetch)) return image.id;
  if (!(await local.start())) {
    image.serverReason = local.reason;
    return null;
  }
  onSent();
  try {
    return await local.load(image);
  } catch (error) {
    image.serverReason = `the embedding did not load: ${error.message}`;
    return null;
  }
}

/** The decode-path hook and the status line's note on who decoded the last mask. */
function showDecodePath(path, note) {
  $("decode-path").textContent = path;
  $("decode-path").title = note;
  setStatus(`${$("status").textContent} · ${note}`);
}

// ---- prompts -------------------------------------------------------------------------

function toPrompt(record) {
  const prompt = {};
  if (record.points.length) prompt.points = record.points;
  if (record.box) {
    const { x0, y0, x1, y1 } = record.box;
    // visual_segment's box is its centre and size.
    prompt.box = { x: (x0 + x1) / 2, y: (y0 + y1) / 2, width: x1 - x0, height: y1 - y0 };
  }
  return prompt;
}

async function refine(record) {
  const image = state.image;
  try {
    await ensureEmbedded();
    // One proposal for a refinement (the earlier logits settle the ambiguity); three for a
    // lone click, of which the service returns the best.
    const multimask = !record.box && record.points.length === 1;
    if (!image.serverReason) {
      try {
        const hit = local.holds(image.id);
        const decoded = await local.segment(image, record, multimask);
        record.rle = decoded.rle;
        record.score = decoded.score;
        record.error = null;
        const cache = hit ? "embedding in the browser" : "embedding fetched";
        setStatus(`${image.name}: ${cache}`);
        showDecodePath("browser", `decoded in the browser in ${Math.round(decoded.ms)} ms`);
        return;
      } catch (error) {
        image.serverReason = `the browser's decode failed: ${error.message}`;
      }
    }
    const prediction = await api.segment(image, toPrompt(record), multimask);
    record.rle = prediction.masks;
    record.score = prediction.confidence;
    record.error = null;
    showDecodePath("server", `decoded by the service: ${image.serverReason}`);
  } catch (error) {
    record.error = error.message;
    showError(error);
  } finally {
    record.pending = false;
    if (state.image === image) render();
  }
}

/**
 * Change the selected object's prompts (or start an object with them when none is
 * selected): one step of the history, then the mask for the new prompts.
 * @param {{points?: object[], box?: object}} update
 */
function setPrompts(update) {
  const old = selectedRecord();
  const record = { ...(old ?? createObject()), ...update, pending: true, error: null };
  state.selected = record.id;
  commit(old ? objects().map((o) => (o.id === old.id ? record : o)) : [...objects(), record]);
  refine(record);
}

function addPoint(at, positive) {
  if (!state.image) return;
  const point = { x: round1(at.x), y: round1(at.y), positive };
  setPrompts({ points: [...(selectedRecord()?.points ?? []), point] });
}

function newObject() {
  if (!state.image) return;
  const record = createObject();
  commit([...objects(), record]);
  select(record.id);
  canvas.focus();
}

function deleteObject(id) {
  if (id === null || !objects().some((object) => object.id === id)) return;
  commit(objects().filter((object) => object.id !== id));
  if (state.selected === id) state.selected = null;
  render();
}

function undo() {
  if (state.at === 0) return;
  state.at -= 1;
  if (!selectedRecord()) state.selected = null;
  render();
}

function redo() {
  if (state.at === state.history.length - 1) return;
  state.at += 1;
  if (!selectedRecord()) state.selected = null;
  render();
}

async function findConcept(text) {
  text = text.trim();
  if (!text || state.findingConcept) return;
  if (!state.image) {
    setStatus("Open an image first.", true);
    return;
  }
  const image = state.image;
  state.findingConcept = true;
  render();
  try {
    await ensureEmbedded();
    const predictions = await api.concept(image, text);
    if (state.image !== image) return;
    if (!predictions.length) {
      setStatus(`${$("status").textContent} · no “${text}” found`);
      return;
    }
    const found = predictions.map((prediction) => {
      const record = createObject(text);
      const [height, width] = prediction.masks.size;
      const { bbox } = maskStats(decodeRle(prediction.masks), width, height);
      // Its bounding box as the object's box prompt: a click then refines the instance.
      const [x, y, w, h] = bbox;
      record.box = w && h ? { x0: x, y0: y, x1: x + w, y1: y + h } : null;
      record.rle = prediction.masks;
      record.score = prediction.confidence;
      return record;
    });
    state.lastLabel = text;
    commit([...objects(), ...found]);
    select(found[0].id);
    setStatus(`${$("status").textContent} · ${found.length} “${text}” found`);
  } catch (error) {
    if (error instanceof ApiError && error.code === "no_concept_route") {
      setStatus(error.message, true);
    } else {
      showError(error);
    }
  } finally {
    state.findingConcept = false;
    render();
  }
}

// ---- export ------------------------------------------------------------------------------

function stem() {
  return state.image.name.replace(/\.[^.]+$/, "") || "image";
}

function exportable() {
  return objects()
    .filter((object) => object.rle)
    .map((object) => ({ ...object, label: state.meta.get(object.id).label }));
}

function exportCoco() {
  if (!state.image) return setStatus("Open an image first.", true);
  let document_;
  let name = `${stem()}.coco.json`;
  if (state.dataset.length > 1) {
    keep();
    document_ = datasetCoco(
      state.dataset.map((entry) => {
        const meta = new Map(entry.saved?.meta ?? []);
        const kept = (entry.saved?.objects ?? []).filter((object) => object.rle);
        const size = kept[0]?.rle.size ?? [0, 0];
        const image = { name: entry.name, width: entry.width || size[1], height: entry.height || size[0] };
        return {
          image,
          objects: kept.map((object) => ({ ...object, label: meta.get(object.id)?.label ?? "object" })),
        };
      }),
    );
    name = "dataset.coco.json";
  } else {
    document_ = cocoDocument(state.image, exportable());
  }
  download(new Blob([JSON.stringify(document_)], { type: "application/json" }), name);
}

async function exportPng() {
  if (!state.image) return setStatus("Open an image first.", true);
  download(await indexMaskPng(state.image, exportable()), `${stem()}.mask.png`);
}

// ---- rendering ---------------------------------------------------------------------------

function render() {
  keep();
  renderDataset();
  view.draw({
    objects: objects(),
    meta: state.meta,
    selected: state.selected,
    drag: state.drag?.box ?? null,
    cursor: document.activeElement === canvas ? state.cursor : null,
    hint: "Drop an image here, or click to choose one",
  });
  renderList();
  $("undo").disabled = state.at === 0;
  $("redo").disabled = state.at === state.history.length - 1;
  for (const id of ["new-object", "export-coco", "export-png"]) $(id).disabled = !state.image;
  $("concept-submit").disabled = !state.image || state.findingConcept;
}

function renderDataset() {
  const count = state.dataset.length;
  $("image-index").textContent = count ? `${state.index + 1} / ${count}` : "0 / 0";
  $("prev-image").disabled = !count || state.index === 0;
  $("next-image").disabled = !count || state.index === count - 1;
  $("clear-dataset").disabled = !count;
  const list = $("dataset-list");
  while (list.children.length > count) list.lastElementChild.remove();
  state.dataset.forEach((entry, position) => {
    let item = list.children[position];
    if (!item) {
      item = document.createElement("li");
      item.addEventListener("click", () => show(Number(item.dataset.position)).catch(showError));
      list.append(item);
    }
    const done = entry.saved?.objects.filter((object) => object.rle).length ?? 0;
    item.dataset.position = String(position);
    item.textContent = `${entry.name} · ${done ? `${done} object${done > 1 ? "s" : ""}` : "to do"}`;
    item.classList.toggle("selected", position === state.index);
    item.classList.toggle("done", done > 0);
  });
}

const rows = new Map(); // object id -> its <li>

function row(id) {
  let item = rows.get(id);
  if (item) return item;
  const meta = state.meta.get(id);
  item = document.createElement("li");
  item.dataset.testid = "object";
  item.dataset.objectId = String(id);
  item.tabIndex = 0;
  const swatch = document.createElement("span");
  swatch.className = "swatch";
  swatch.style.background = meta.colour;
  const label = document.createElement("input");
  label.type = "text";
  label.value = meta.label;
  label.setAttribute("aria-label", `Label of object ${id}`);
  label.addEventListener("input", () => {
    meta.label = label.value;
    state.lastLabel = label.value.trim() || "object";
  });
  const score = document.createElement("span");
  score.className = "score";
  const visibility = document.createElement("button");
  visibility.type = "button";
  visibility.className = "visibility";
  visibility.addEventListener("click", (event) => {
    event.stopPropagation();
    meta.visible = !meta.visible;
    render();
  });
  const remove = document.createElement("button");
  remove.type = "button";
  remove.textContent = "×";
  remove.title = "Delete (Delete)";
  remove.setAttribute("aria-label", `Delete object ${id}`);
  remove.addEventListener("click", (event) => {
    event.stopPropagation();
    deleteObject(id);
  });
  item.append(swatch, label, score, visibility, remove);
  item.addEventListener("click", () => select(id));
  item.addEventListener("keydown", (event) => {
    if (event.target === item && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      select(id);
    }
  });
  rows.set(id, item);
  return item;
}

function renderList() {
  const list = $("object-list");
  const current = objects();
  const ids = new Set(current.map((object) => object.id));
  for (const [id, item] of rows) {
    if (!ids.has(id) || !state.meta.has(id)) {
      item.remove();
      rows.delete(id);
    }
  }
  current.forEach((object, index) => {
    const item = row(object.id);
    const meta = state.meta.get(object.id);
    if (list.children[index] !== item) list.insertBefore(item, list.children[index] ?? null);
    item.classList.toggle("selected", object.id === state.selected);
    item.classList.toggle("pending", object.pending);
    item.classList.toggle("hidden-object", !meta.visible);
    item.setAttribute("aria-selected", String(object.id === state.selected));
    const score = item.querySelector(".score");
    score.textContent =
      object.score === null ? (object.rle ? "" : "empty") : object.score.toFixed(2);
    score.title = object.error ?? "the mask's predicted IoU";
    const visibility = item.querySelector(".visibility");
    visibility.textContent = meta.visible ? "◉" : "○";
    visibility.title = meta.visible ? "Hide" : "Show";
    visibility.setAttribute("aria-pressed", String(meta.visible));
    visibility.setAttribute("aria-label", `${meta.visible ? "Hide" : "Show"} object ${object.id}`);
  });
  $("no-objects").hidden = current.length > 0;
}

// ---- input -------------------------------------------------------------------------------

canvas.addEventListener("contextmenu", (event) => event.preventDefault());

canvas.addEventListener("pointerdown", (event) => {
  canvas.focus();
  if (!state.image) {
    $("image-input").click();
    return;
  }
  if (event.button !== 0 && event.button !== 2) return;
  const at = view.toImage(event.clientX, event.clientY);
  if (!at) return;
  event.preventDefault();
  canvas.setPointerCapture(event.pointerId);
  state.cursor = null;
  state.drag = {
    button: event.button,
    negative: event.button === 2 || event.shiftKey,
    clientX: event.clientX,
    clientY: event.clientY,
    start: at,
    box: null,
  };
});

canvas.addEventListener("pointermove", (event) => {
  const drag = state.drag;
  if (!drag || drag.button !== 0) return;
  const moved = Math.hypot(event.clientX - drag.clientX, event.clientY - drag.clientY);
  if (!drag.box && moved < DRAG_PX) return;
  const end = view.toImage(event.clientX, event.clientY, true);
  drag.box = {
    x0: Math.min(drag.start.x, end.x),
    y0: Math.min(drag.start.y, end.y),
    x1: Math.max(drag.start.x, end.x),
    y1: Math.max(drag.start.y, end.y),
  };
  render();
});

canvas.addEventListener("pointerup", () => {
  const drag = state.drag;
  if (!drag) return;
  state.drag = null;
  const box = drag.box;
  if (box && box.x1 - box.x0 >= MIN_BOX_PX && box.y1 - box.y0 >= MIN_BOX_PX) {
    const { x0, y0, x1, y1 } = box;
    setPrompts({ box: { x0: round1(x0), y0: round1(y0), x1: round1(x1), y1: round1(y1) } });
  } else if (!box) {
    addPoint(drag.start, !drag.negative);
  } else {
    render();
  }
});

canvas.addEventListener("pointercancel", () => {
  state.drag = null;
  render();
});

canvas.addEventListener("blur", () => render());

function moveCursor(dx, dy, step) {
  const image = state.image;
  const cursor = state.cursor ?? { x: image.width / 2, y: image.height / 2 };
  // `step` screen pixels, whatever the image's scale on screen.
  const by = step / view.scale;
  state.cursor = {
    x: Math.min(Math.max(cursor.x + dx * by, 0), image.width - 0.01),
    y: Math.min(Math.max(cursor.y + dy * by, 0), image.height - 0.01),
  };
  render();
}

const ARROWS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

document.addEventListener("keydown", (event) => {
  const typing =
    event.target instanceof HTMLInputElement && !["file", "button"].includes(event.target.type);
  const command = event.ctrlKey || event.metaKey;
  if (event.key === "Escape") {
    if (typing) event.target.blur();
    if (state.drag) {
      state.drag = null;
      render();
    } else {
      select(null);
    }
    return;
  }
  if (typing) return;
  const key = event.key.toLowerCase();
  if (command && key === "z") {
    event.preventDefault();
    if (event.shiftKey) redo();
    else undo();
    return;
  }
  if (command && key === "y") {
    event.preventDefault();
    redo();
    return;
  }
  if (command || event.altKey) return;
  if (event.key === "PageDown" || event.key === "]") {
    event.preventDefault();
    show(state.index + 1).catch(showError);
  } else if (event.key === "PageUp" || event.key === "[") {
    event.preventDefault();
    show(state.index - 1).catch(showError);
  } else if (event.key === "Delete" || event.key === "Backspace") {
    event.preventDefault();
    deleteObject(state.selected);
  } else if (key === "n") {
    event.preventDefault();
    newObject();
  } else if (document.activeElement === canvas && state.image) {
    if (event.key in ARROWS) {
      event.preventDefault();
      const [dx, dy] = ARROWS[event.key];
      moveCursor(dx, dy, event.shiftKey ? 20 : 4);
    } else if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      if (!state.cursor) moveCursor(0, 0, 0);
      addPoint(state.cursor, !event.shiftKey);
    }
  }
});

for (const id of ["image-input", "folder-input"]) {
  $(id).addEventListener("change", (event) => {
    openFiles(event.target.files).catch(showError);
    event.target.value = "";
  });
}
$("next-image").addEventListener("click", () => show(state.index + 1).catch(showError));
$("prev-image").addEventListener("click", () => show(state.index - 1).catch(showError));
$("clear-dataset").addEventListener("click", () => clearAll().catch(showError));
// Another tab or a closing tab: what is kept is what was last changed.
addEventListener("pagehide", () => keep());

const stage = $("stage");
for (const type of ["dragenter", "dragover"]) {
  stage.addEventListener(type, (event) => {
    event.preventDefault();
    stage.classList.add("dropping");
    $("drop-hint").hidden = false;
  });
}
stage.addEventListener("dragleave", () => {
  stage.classList.remove("dropping");
  $("drop-hint").hidden = true;
});
stage.addEventListener("drop", (event) => {
  event.preventDefault();
  stage.classList.remove("dropping");
  $("drop-hint").hidden = true;
  openFiles(event.dataTransfer.files).catch(showError);
});
// A file dropped beside the canvas must not replace the page.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

$("concept-form").addEventListener("submit", (event) => {
  event.preventDefault();
  findConcept($("concept-input").value);
});

const keyInput = $("api-key");
keyInput.value = sessionStorage.getItem(KEY_STORAGE) ?? "";
api.key = keyInput.value.trim();
keyInput.addEventListener("input", () => {
  api.key = keyInput.value.trim();
  sessionStorage.setItem(KEY_STORAGE, api.key);
});
keyInput.addEventListener("change", () => {
  if (state.image && !state.image.id) ensureEmbedded().catch(showError);
});

$("new-object").addEventListener("click", newObject);
$("undo").addEventListener("click", undo);
$("redo").addEventListener("click", redo);
$("export-coco").addEventListener("click", exportCoco);
$("export-png").addEventListener("click", () => exportPng().catch(showError));

new ResizeObserver(() => {
  view.fit();
  render();
}).observe(stage);
view.fit();
render();
restoreKept().catch(showError);
