// The open image's objects (or the whole dataset's) as files: COCO JSON and a PNG mask.

import { objects, state } from "./context.js";
import { datasetCoco } from "./dataset.js";
import { cocoDocument, download, indexMaskPng } from "./export.js";
import { keep } from "./images.js";
import { setStatus } from "./status.js";

export function stem() {
  return state.image.name.replace(/\.[^.]+$/, "") || "image";
}

export function exportable() {
  return objects()
    .filter((object) => object.rle)
    .map((object) => ({ ...object, label: state.meta.get(object.id).label }));
}

export function exportCoco() {
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

export async function exportPng() {
  if (!state.image) return setStatus("Open an image first.", true);
  download(await indexMaskPng(state.image, exportable()), `${stem()}.mask.png`);
}
