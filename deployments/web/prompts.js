// Prompts on the open image: clicks and boxes refine the selected object (decoded in the
// browser, or by the service), concepts add objects; undo and redo walk the history.

import { ApiError } from "./api.js";
import {
  $,
  api,
  canvas,
  commit,
  createObject,
  local,
  objects,
  round1,
  select,
  selectedRecord,
  state,
} from "./context.js";
import { ensureEmbedded } from "./images.js";
import { render } from "./render.js";
import { servedModel } from "./served-model.js";
import { decodeRle, maskStats } from "./rle.js";
import { setStatus, showDecodePath, showError } from "./status.js";

export function toPrompt(record) {
  const prompt = {};
  if (record.points.length) prompt.points = record.points;
  if (record.box) {
    const { x0, y0, x1, y1 } = record.box;
    // visual_segment's box is its centre and size.
    prompt.box = { x: (x0 + x1) / 2, y: (y0 + y1) / 2, width: x1 - x0, height: y1 - y0 };
  }
  return prompt;
}

export async function refine(record) {
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
export function setPrompts(update) {
  const old = selectedRecord();
  const record = { ...(old ?? createObject()), ...update, pending: true, error: null };
  state.selected = record.id;
  commit(old ? objects().map((o) => (o.id === old.id ? record : o)) : [...objects(), record]);
  refine(record);
}

export function addPoint(at, positive) {
  if (!state.image) return;
  const point = { x: round1(at.x), y: round1(at.y), positive };
  setPrompts({ points: [...(selectedRecord()?.points ?? []), point] });
}

export function newObject() {
  if (!state.image) return;
  const record = createObject();
  commit([...objects(), record]);
  select(record.id);
  canvas.focus();
}

export function deleteObject(id) {
  if (id === null || !objects().some((object) => object.id === id)) return;
  commit(objects().filter((object) => object.id !== id));
  if (state.selected === id) state.selected = null;
  render();
}

export function undo() {
  if (state.at === 0) return;
  state.at -= 1;
  if (!selectedRecord()) state.selected = null;
  render();
}

export function redo() {
  if (state.at === state.history.length - 1) return;
  state.at += 1;
  if (!selectedRecord()) state.selected = null;
  render();
}

export async function findConcept(text) {
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
      const model = await servedModel();
      const why =
        model?.concepts === "untrained" ? " (the served model's concept detector is untrained)" : "";
      setStatus(`${$("status").textContent} · no “${text}” found${why}`);
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
