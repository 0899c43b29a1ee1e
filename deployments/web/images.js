// The dataset's images: opened from files or a COCO file, shown one at a time, embedded
// (in this browser or on the service), the next one prefetched, kept in IndexedDB.

import { objectsFromCoco } from "./dataset.js";
import { $, PALETTE, api, local, objects, state, view } from "./context.js";
import { clearRows, render } from "./render.js";
import { servedModel } from "./served-model.js";
import { PREFETCHED, setStatus, showError, showProgress } from "./status.js";
import {
  clearDataset,
  loadDataset,
  saveAnnotations,
  saveCurrent,
  saveFiles,
} from "./storage.js";

export function readDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

/** A dataset entry: an image file and, once shown, its pixels, id and objects. */
export function newEntry(name, blob, saved = null) {
  return { name, blob, dataUrl: null, id: null, width: 0, height: 0, bitmap: null, saved };
}

/** The open image's objects as plain data (the history's current step; undo is not kept). */
export function snapshot() {
  const current = objects().map((object) => ({ ...object, pending: false }));
  const ids = new Set(current.map((object) => object.id));
  const meta = [...state.meta].filter(([id]) => ids.has(id)).map(([id, m]) => [id, { ...m }]);
  return { objects: current, meta, nextId: state.nextId };
}

export function restore(saved) {
  state.history = [saved?.objects.map((object) => ({ ...object })) ?? []];
  state.at = 0;
  state.meta = new Map((saved?.meta ?? []).map(([id, m]) => [id, { ...m }]));
  state.nextId = saved?.nextId ?? 1;
  state.selected = null;
  // The list's rows are bound to their object's meta: another image's object 1 is another.
  clearRows();
}

// One debounced save per image: moving to the next image must not cancel the last one's.
export const saving = new Map();
export function cancelSaves() {
  for (const timer of saving.values()) clearTimeout(timer);
  saving.clear();
}
/** Keep the open image's objects (in the entry, and in IndexedDB shortly after). */
export function keep() {
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
export async function openFiles(fileList) {
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
export async function show(index) {
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
export async function prefetch(index) {
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

export async function continueFromCoco(file) {
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

export async function clearAll() {
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

export async function restoreKept() {
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
export function ensureEmbedded() {
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
        servedModel(); // asked again where the first ask lacked the key
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
export async function embedLocally(image, onSent) {
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
