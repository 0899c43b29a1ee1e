// Drawing the page from its state: the canvas, the dataset's list, the object list, the
// buttons' enabled states.

import { $, canvas, objects, select, state, view } from "./context.js";
import { keep, show } from "./images.js";
import { deleteObject } from "./prompts.js";
import { showError } from "./status.js";
import { draw as drawVideo, video } from "./video.js";

export function render() {
  if (video.active) return drawVideo();
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

export function renderDataset() {
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

export const rows = new Map(); // object id -> its <li>

export function row(id) {
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

export function renderList() {
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

/** Forget the object rows: another image's object 1 is another object. */
export function clearRows() {
  for (const item of rows.values()) item.remove();
  rows.clear();
}
