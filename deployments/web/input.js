// Input: the canvas's pointer and keyboard, the file pickers, drag and drop, the buttons.

import {
  $,
  DRAG_PX,
  KEY_STORAGE,
  MIN_BOX_PX,
  api,
  canvas,
  round1,
  select,
  state,
  view,
} from "./context.js";
import { exportCoco, exportPng } from "./exporting.js";
import { clearAll, ensureEmbedded, keep, openFiles, show } from "./images.js";
import { addPoint, deleteObject, findConcept, newObject, redo, setPrompts, undo } from "./prompts.js";
import { render } from "./render.js";
import { showError } from "./status.js";
import { videoKey } from "./video-controls.js";
import { closeVideo, openVideo, video, videoClick, videoConcept } from "./video.js";

canvas.addEventListener("contextmenu", (event) => event.preventDefault());

canvas.addEventListener("pointerdown", (event) => {
  canvas.focus();
  if (!state.image && !video.active) {
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
    const rounded = { x0: round1(x0), y0: round1(y0), x1: round1(x1), y1: round1(y1) };
    if (video.active) videoConcept(rounded).catch(showError);
    else setPrompts({ box: rounded });
  } else if (!box) {
    if (video.active) videoClick(drag.start, !drag.negative).catch(showError);
    else addPoint(drag.start, !drag.negative);
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
  if (video.active) {
    if (typing && event.key === "Escape") event.target.blur();
    else if (!typing && !command && !event.altKey) videoKey(event);
    return;
  }
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
    const files = [...event.target.files]; // a copy: clearing the input empties its list
    event.target.value = "";
    (video.active ? closeVideo() : Promise.resolve())
      .then(() => openFiles(files))
      .catch(showError);
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
  const files = event.dataTransfer.files;
  if ([...files].some((file) => file.type.startsWith("video/"))) openVideo(files).catch(showError);
  else (video.active ? closeVideo() : Promise.resolve()).then(() => openFiles(files)).catch(showError);
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
