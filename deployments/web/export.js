// The objects as files: COCO JSON (the service's RLE as segmentation) and a PNG mask.

import { decodeRle, maskStats } from "./rle.js";

/**
 * A COCO detection file with one image: categories from the objects' labels, one
 * annotation per object with a mask.
 * @param {{name: string, width: number, height: number}} image
 * @param {Array<{rle: {size: number[], counts: string}, score: number, label: string}>} objects
 * @returns {object} what pycocotools' COCO() loads
 */
export function cocoDocument(image, objects) {
  const categories = [];
  const categoryIds = new Map();
  const annotations = [];
  for (const object of objects) {
    const name = object.label.trim() || "object";
    if (!categoryIds.has(name)) {
      categoryIds.set(name, categories.length + 1);
      categories.push({ id: categories.length + 1, name, supercategory: "" });
    }
    const [height, width] = object.rle.size;
    const { area, bbox } = maskStats(decodeRle(object.rle), width, height);
    annotations.push({
      id: annotations.length + 1,
      image_id: 1,
      category_id: categoryIds.get(name),
      segmentation: { size: [height, width], counts: object.rle.counts },
      area,
      bbox,
      iscrowd: 0,
      score: object.score,
    });
  }
  return {
    info: { description: "sam3-serve annotations", date_created: new Date().toISOString() },
    images: [{ id: 1, file_name: image.name, width: image.width, height: image.height }],
    categories,
    annotations,
  };
}

/**
 * A PNG of the image's size whose pixels hold the number of the object there (1, 2, ... in
 * the order of the COCO annotations; 0 for none; a later object covers an earlier one), in
 * every colour channel, opaque.
 * @returns {Promise<Blob>}
 */
export function indexMaskPng(image, objects) {
  const canvas = document.createElement("canvas");
  canvas.width = image.width;
  canvas.height = image.height;
  const ctx = canvas.getContext("2d");
  const pixels = ctx.createImageData(image.width, image.height);
  const data = pixels.data;
  for (let i = 3; i < data.length; i += 4) data[i] = 255;
  objects.forEach((object, index) => {
    const [height, width] = object.rle.size;
    if (height !== image.height || width !== image.width) return;
    const mask = decodeRle(object.rle);
    const value = Math.min(index + 1, 255);
    for (let i = 0; i < mask.length; i += 1) {
      if (mask[i]) {
        const j = 4 * i;
        data[j] = value;
        data[j + 1] = value;
        data[j + 2] = value;
      }
    }
  });
  ctx.putImageData(pixels, 0, 0);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

/** Let the browser save `blob` as `name`. */
export function download(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}
