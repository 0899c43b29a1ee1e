// The annotation page: open an image (embedded once), click and drag to segment objects,
// find concepts, undo and redo, export COCO JSON and a PNG mask. It uses the public API only.
// Its modules each do one job; this one starts the page.

import { $, view } from "./context.js";
import { restoreKept } from "./images.js";
import "./input.js";
import { render } from "./render.js";
import { servedModel } from "./served-model.js";
import { showError } from "./status.js";
import { wireVideo } from "./video-controls.js";

wireVideo();
new ResizeObserver(() => {
  view.fit();
  render();
}).observe($("stage"));
view.fit();
render();
restoreKept().catch(showError);
servedModel();
