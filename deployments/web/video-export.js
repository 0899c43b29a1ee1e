// A video's tracked objects as files: COCO with each frame an image (pycocotools reads it;
// `track_id` says which object an annotation is), and YouTube-VIS (one annotation per object,
// its mask, box and area on every frame, null where it is absent).

import { decodeRle, maskStats } from "./rle.js";

/**
 * @typedef {object} TrackedVideo
 * @property {string} name the video's file name
 * @property {number} width
 * @property {number} height
 * @property {string[]} frameNames one per frame, e.g. "clip/00000.jpg"
 * @property {Map<number, {label: string}>} objects by object id
 * @property {Array<Map<number, {rle: {size: number[], counts: string}, score: number}>>} masks
 *   per frame: each object's mask on it
 */

function categoriesOf(objects) {
  const categories = [];
  const ids = new Map();
  for (const { label } of objects.values()) {
    const name = label.trim() || "object";
    if (!ids.has(name)) {
      ids.set(name, categories.length + 1);
      categories.push({ id: categories.length + 1, name, supercategory: "" });
    }
  }
  const categoryOf = (objId) => ids.get(objects.get(objId)?.label.trim() || "object");
  return { categories, categoryOf };
}

/** Area and [x, y, w, h] box of an RLE mask, as pycocotools' `area` and `toBbox` give them. */
function stats(rle) {
  const [height, width] = rle.size;
  return maskStats(decodeRle(rle), width, height);
}

const info = () => ({
  description: "sam3-serve video annotations",
  date_created: new Date().toISOString(),
});

/**
 * COCO detection JSON, one image per frame (ids 1..n in frame order, `frame_index` beside),
 * one annotation per object and frame where its mask is not empty.
 * @param {TrackedVideo} video
 */
export function cocoPerFrame(video) {
  const { categories, categoryOf } = categoriesOf(video.objects);
  const images = video.frameNames.map((file_name, i) => ({
    id: i + 1,
    file_name,
    width: video.width,
    height: video.height,
    frame_index: i,
  }));
  const annotations = [];
  video.masks.forEach((frame, i) => {
    for (const [objId, { rle, score }] of frame) {
      if (!video.objects.has(objId)) continue;
      const { area, bbox } = stats(rle);
      if (!area) continue;
      annotations.push({
        id: annotations.length + 1,
        image_id: i + 1,
        category_id: categoryOf(objId),
        segmentation: { size: rle.size, counts: rle.counts },
        area,
        bbox,
        iscrowd: 0,
        score,
        track_id: objId,
      });
    }
  });
  return { info: info(), images, categories, annotations };
}

/**
 * YouTube-VIS JSON: `videos` (one, its frames' file names), `annotations` (one per object:
 * `segmentations`, `bboxes` and `areas` with one entry per frame, null where the object is
 * not on it), `categories`.
 * @param {TrackedVideo} video
 */
export function youtubeVis(video) {
  const { categories, categoryOf } = categoriesOf(video.objects);
  const length = video.frameNames.length;
  const annotations = [...video.objects.keys()].map((objId, index) => {
    const segmentations = [];
    const bboxes = [];
    const areas = [];
    for (let i = 0; i < length; i += 1) {
      const found = video.masks[i]?.get(objId);
      const measured = found ? stats(found.rle) : null;
      const present = measured && measured.area > 0;
      segmentations.push(present ? { size: found.rle.size, counts: found.rle.counts } : null);
      bboxes.push(present ? measured.bbox : null);
      areas.push(present ? measured.area : null);
    }
    return {
      id: index + 1,
      video_id: 1,
      category_id: categoryOf(objId),
      iscrowd: 0,
      width: video.width,
      height: video.height,
      length: 1,
      segmentations,
      bboxes,
      areas,
      track_id: objId,
    };
  });
  return {
    info: info(),
    licenses: [],
    videos: [
      { id: 1, width: video.width, height: video.height, length, file_names: video.frameNames },
    ],
    categories,
    annotations,
  };
}
