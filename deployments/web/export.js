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
 * A single-channel PNG of the image's size whose pixels hold the number of the object there
 * (1, 2, ... in the order of the COCO annotations; 0 for none; a later object covers an
 * earlier one): 8-bit grayscale, 16-bit past 255 objects. A canvas can only write RGBA PNGs,
 * hence this small encoder (the browser's CompressionStream does the deflate).
 * @returns {Promise<Blob>}
 */
export async function indexMaskPng(image, objects) {
  const { width, height } = image;
  const index = new Uint16Array(width * height);
  objects.forEach((object, i) => {
    const [h, w] = object.rle.size;
    if (h !== height || w !== width) return;
    const mask = decodeRle(object.rle);
    for (let p = 0; p < mask.length; p += 1) if (mask[p]) index[p] = i + 1;
  });
  const bytes = objects.length > 255 ? 2 : 1;
  const row = 1 + width * bytes; // a filter byte (0: none), then the row
  const raw = new Uint8Array(row * height);
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      const value = index[y * width + x];
      const at = y * row + 1 + x * bytes;
      if (bytes === 2) raw[at] = value >> 8; // big-endian
      raw[at + bytes - 1] = value & 0xff;
    }
  }
  const header = new DataView(new ArrayBuffer(13));
  header.setUint32(0, width);
  header.setUint32(4, height);
  header.setUint8(8, 8 * bytes); // bit depth; colour type 0 (grayscale), the rest 0
  const zlib = new Blob([raw]).stream().pipeThrough(new CompressionStream("deflate"));
  const data = new Uint8Array(await new Response(zlib).arrayBuffer());
  const signature = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  return new Blob(
    [
      new Uint8Array(signature),
      pngChunk("IHDR", new Uint8Array(header.buffer)),
      pngChunk("IDAT", data),
      pngChunk("IEND", new Uint8Array()),
    ],
    { type: "image/png" },
  );
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

/** One PNG chunk: length, type, data, CRC-32 of type and data. */
function pngChunk(type, data) {
  const chunk = new Uint8Array(12 + data.length);
  const view = new DataView(chunk.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i += 1) chunk[4 + i] = type.charCodeAt(i);
  chunk.set(data, 8);
  let crc = 0xffffffff;
  for (let i = 4; i < 8 + data.length; i += 1) crc = CRC_TABLE[(crc ^ chunk[i]) & 0xff] ^ (crc >>> 8);
  view.setUint32(8 + data.length, (crc ^ 0xffffffff) >>> 0);
  return chunk;
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
