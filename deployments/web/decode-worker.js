// The interactive decoder in a Web Worker (onnxruntime-web, WASM with SIMD, and threads
// where the page is cross-origin isolated): the page sends the decoder once, each image's
// embedding once (sam3_core/protocol/embedding.py's layout), then prompts; it gets masks as
// COCO RLE, computed as the server computes them (local-masks.js). A decode answers the
// time of each of its stages (`stages`, milliseconds) for bench/browser_decode.py.
//
// Messages in: {id, type: "init", onnx: ArrayBuffer, threads}, {id, type: "embedding",
// imageId, buffer}, {id, type: "decode", imageId, points, box, multimask},
// {id, type: "drop", imageId}. Out: {id, ...result} or {id, error}.

import * as ort from "./vendor/ort.wasm.min.mjs";
import { chooseProposal, fillHoles, upsampleToRle } from "./local-masks.js";

ort.env.wasm.wasmPaths = new URL("./vendor/", import.meta.url).href;

const KEEP_IMAGES = 4; // embeddings held here: the current image, the next, two behind
const KEEP_PRIORS = 64; // earlier decodes per image, for refinement
const MAGIC = "SAM3EMB1";
// The smallest module with a v128 (SIMD) function: whether this browser runs WASM SIMD
// (onnxruntime-web ships only its SIMD build, so it decodes with SIMD or not at all).
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0,
  253, 15, 253, 98, 11,
]);
const WARM_RUNS = 2; // decodes of zeros when the decoder loads, before any click
let session = null;
/** @type {Map<string, {feeds: object, height: number, width: number, settings: object, priors: object[]}>} */
const images = new Map();

// float16 -> float32 for every bit pattern: one lookup per value.
let halfTable = null;
function halfToFloat() {
  if (halfTable) return halfTable;
  halfTable = new Float32Array(65536);
  for (let h = 0; h < 65536; h += 1) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const fraction = h & 0x3ff;
    if (exponent === 0) halfTable[h] = sign * 2 ** -14 * (fraction / 1024);
    else if (exponent === 31) halfTable[h] = fraction ? NaN : sign * Infinity;
    else halfTable[h] = sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
  }
  return halfTable;
}

/** The embedding's header and arrays (float32), from the wire layout. */
export function readEmbedding(buffer) {
  const bytes = new Uint8Array(buffer);
  if (new TextDecoder().decode(bytes.subarray(0, 8)) !== MAGIC) {
    throw new Error("not a SAM3 embedding");
  }
  const length = new DataView(buffer).getUint32(8, true);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(12, 12 + length)));
  const base = Math.ceil((12 + length) / 16) * 16;
  const arrays = {};
  for (const entry of header.tensors) {
    const count = entry.shape.reduce((a, b) => a * b, 1);
    const start = base + entry.offset;
    const out = new Float32Array(count);
    if (entry.dtype === "float32") {
      out.set(new Float32Array(buffer, start, count));
    } else if (entry.dtype === "float16") {
      const table = halfToFloat();
      const half = new Uint16Array(buffer, start, count);
      for (let i = 0; i < count; i += 1) out[i] = table[half[i]];
    } else if (entry.dtype === "int8") {
      const q = new Int8Array(buffer, start, count);
      const scales = new Float32Array(buffer, base + entry.scales.offset, entry.shape[1]);
      const plane = count / entry.shape[1];
      for (let i = 0; i < count; i += 1) out[i] = q[i] * scales[Math.floor(i / plane)];
    } else {
      throw new Error(`unknown dtype ${entry.dtype}`);
    }
    arrays[entry.name] = new ort.Tensor("float32", out, entry.shape);
  }
  return { header, arrays };
}

const samePoint = (a, b) => a.x === b.x && a.y === b.y && a.positive === b.positive;
const sameBox = (a, b) =>
  (!a && !b) || (a && b && a.x0 === b.x0 && a.y0 === b.y0 && a.x1 === b.x1 && a.y1 === b.y1);

/** The logits cache's rule (sam3_core/caches.py `find_prior`), over this image's decodes. */
function findPrior(priors, points, box) {
  let best = null;
  for (let i = priors.length - 1; i >= 0; i -= 1) {
    const earlier = priors[i];
    if (!sameBox(earlier.box, box)) continue;
    if (!earlier.points.every((p) => points.some((q) => samePoint(p, q)))) continue;
    if (earlier.points.length >= points.length) continue;
    if (earlier.points.length === points.length - 1) return earlier.logits;
    if (!best || earlier.points.length > best.points.length) best = earlier;
  }
  return best ? best.logits : null;
}

/** The graph's feed for one prompt on one image (box corners first, as points 2 and 3). */
function feedsFor(image, points, box, prior) {
  const coords = [];
  const labels = [];
  if (box) {
    coords.push(box.x0, box.y0, box.x1, box.y1);
    labels.push(2, 3);
  }
  for (const p of points) {
    coords.push(p.x, p.y);
    labels.push(p.positive ? 1 : 0);
  }
  const side = image.settings.low_res_size;
  // Without a previous decode the graph ignores the mask: the smallest one it takes.
  const maskSide = prior ? side : (image.settings.no_mask_side ?? side);
  return {
    ...image.feeds,
    point_coords: new ort.Tensor("float32", Float32Array.from(coords), [1, labels.length, 2]),
    point_labels: new ort.Tensor("float32", Float32Array.from(labels), [1, labels.length]),
    mask_input: new ort.Tensor("float32", prior ?? new Float32Array(maskSide * maskSide), [
      1, 1, maskSide, maskSide,
    ]),
    has_mask_input: new ort.Tensor("float32", Float32Array.of(prior ? 1 : 0), [1]),
    orig_im_size: new ort.Tensor("float32", Float32Array.of(image.height, image.width), [2]),
  };
}

/**
 * A few decodes of zeros, the embedding's shapes read from the graph. V8 runs WebAssembly in
 * a baseline tier first and compiles what runs hot again in the background: the first
 * decodes are several times slower, and this spends them while the page waits for an image
 * rather than on its first clicks. False where the graph does not say its shapes.
 */
async function warmUp() {
  const shapes = new Map((session.inputMetadata ?? []).map((m) => [m.name, m.shape]));
  const embed = ["image_embed", "high_res_feats_0", "high_res_feats_1"].map((name) => [
    name,
    shapes.get(name),
  ]);
  if (!embed.every(([, shape]) => shape?.every((d) => typeof d === "number"))) return false;
  const side = embed[1][1][3];
  const zeros = (shape) => new Float32Array(shape.reduce((a, b) => a * b, 1));
  const image = {
    feeds: Object.fromEntries(
      embed.map(([name, shape]) => [name, new ort.Tensor("float32", zeros(shape), shape)]),
    ),
    height: side,
    width: side,
    settings: { low_res_size: side },
  };
  const centre = [{ x: side / 2, y: side / 2, positive: true }];
  for (let i = 0; i < WARM_RUNS; i += 1) await session.run(feedsFor(image, centre, null, null));
  return true;
}

const handlers = {
  async init({ onnx, threads }) {
    ort.env.wasm.numThreads = self.crossOriginIsolated ? threads : 1;
    session = await ort.InferenceSession.create(new Uint8Array(onnx), {
      executionProviders: ["wasm"],
      graphOptimizationLevel: "all",
    });
    const started = performance.now();
    const warmed = await warmUp();
    return {
      warmMs: warmed ? performance.now() - started : null,
      threads: ort.env.wasm.numThreads,
      isolated: self.crossOriginIsolated,
      simd: WebAssembly.validate(SIMD_PROBE),
    };
  },

  embedding({ imageId, buffer }) {
    const { header, arrays } = readEmbedding(buffer);
    images.delete(imageId);
    const image = {
      feeds: arrays,
      height: header.orig_hw[0],
      width: header.orig_hw[1],
      settings: header.decoder,
      priors: [],
    };
    images.set(imageId, image);
    while (images.size > KEEP_IMAGES) images.delete(images.keys().next().value);
    return { bytes: buffer.byteLength, etag: header.decoder?.etag ?? null };
  },

  drop({ imageId }) {
    images.delete(imageId);
    return {};
  },

  async decode({ imageId, points, box, multimask }) {
    const image = images.get(imageId);
    if (!image) throw new Error("no embedding for this image here");
    const started = performance.now();
    const settings = image.settings;
    const side = settings.low_res_size;
    const prior = findPrior(image.priors, points, box);
    const feeds = feedsFor(image, points, box, prior);
    const marks = [performance.now()];
    const out = await session.run(feeds);
    marks.push(performance.now());
    const masks = out.low_res_masks.data;
    const scores = out.iou_predictions.data;
    const chosen = chooseProposal(masks, scores, multimask, settings);
    const clamp = settings.logits_clamp;
    const kept = new Float32Array(chosen.logits.length); // a loop: TypedArray.map is slow
    for (let i = 0; i < kept.length; i += 1) {
      const v = chosen.logits[i];
      kept[i] = v > clamp ? clamp : v < -clamp ? -clamp : v;
    }
    image.priors.push({ points, box, logits: kept });
    if (image.priors.length > KEEP_PRIORS) image.priors.shift();
    marks.push(performance.now());
    const logits = fillHoles(Float32Array.from(chosen.logits), side, settings.mask_threshold,
      settings.max_hole_area);
    marks.push(performance.now());
    const rle = upsampleToRle(logits, side, image.height, image.width, settings.mask_threshold);
    marks.push(performance.now());
    return {
      rle: { size: rle.size, counts: rle.counts },
      score: chosen.score,
      proposal: chosen.index,
      prior: prior !== null,
      decodeMs: marks[1] - marks[0],
      ms: marks[4] - started,
      stages: {
        feeds: marks[0] - started,
        run: marks[1] - marks[0],
        choose: marks[2] - marks[1],
        holes: marks[3] - marks[2],
        upsample: marks[4] - marks[3],
      },
    };
  },
};

// One message at a time: an onnxruntime session runs one inference at a time.
let queue = Promise.resolve();
self.onmessage = ({ data }) => {
  queue = queue.then(async () => {
    try {
      const result = await handlers[data.type](data);
      self.postMessage({ id: data.id, ...result });
    } catch (error) {
      self.postMessage({ id: data.id, error: String(error?.message ?? error) });
    }
  });
};
