// A dataset, not a picture: the images opened together, one COCO file for all of them, and
// a COCO file read back to continue where the work stopped.

import { cocoDocument } from "./export.js";

/**
 * One COCO file for the dataset: image ids 1..n in the dataset's order, categories shared
 * by name, annotation ids running over the whole set.
 * @param {Array<{image: {name: string, width: number, height: number}, objects: object[]}>} entries
 *   images never opened (no size yet) are listed only if they have objects
 */
export function datasetCoco(entries) {
  const images = [];
  const categories = [];
  const categoryIds = new Map();
  const annotations = [];
  entries.forEach(({ image, objects }, index) => {
    if (!image.width) return;
    const one = cocoDocument(image, objects);
    images.push({ ...one.images[0], id: index + 1 });
    for (const annotation of one.annotations) {
      const name = one.categories.find((c) => c.id === annotation.category_id).name;
      if (!categoryIds.has(name)) {
        categoryIds.set(name, categories.length + 1);
        categories.push({ id: categories.length + 1, name, supercategory: "" });
      }
      annotations.push({
        ...annotation,
        id: annotations.length + 1,
        image_id: index + 1,
        category_id: categoryIds.get(name),
      });
    }
  });
  return {
    info: { description: "sam3-serve annotations", date_created: new Date().toISOString() },
    images,
    categories,
    annotations,
  };
}

/**
 * The objects a COCO file holds for each image, by file name: RLE masks only (polygons
 * are skipped), their category's name as label, their bbox as the box prompt.
 * @returns {Map<string, Array<{label: string, rle: object, score: number|null, box: object|null}>>}
 */
export function objectsFromCoco(document_) {
  const names = new Map((document_.categories ?? []).map((c) => [c.id, c.name]));
  const files = new Map((document_.images ?? []).map((i) => [i.id, i.file_name]));
  const found = new Map();
  for (const annotation of document_.annotations ?? []) {
    const file = files.get(annotation.image_id);
    const segmentation = annotation.segmentation;
    if (!file || typeof segmentation?.counts !== "string") continue;
    const [x, y, w, h] = annotation.bbox ?? [0, 0, 0, 0];
    if (!found.has(file)) found.set(file, []);
    found.get(file).push({
      label: names.get(annotation.category_id) ?? "object",
      rle: { size: segmentation.size, counts: segmentation.counts },
      score: typeof annotation.score === "number" ? annotation.score : null,
      box: w && h ? { x0: x, y0: y, x1: x + w, y1: y + h } : null,
    });
  }
  return found;
}
