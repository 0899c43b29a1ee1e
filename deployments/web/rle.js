// COCO run-length encoding as the service sends it (pycocotools' compressed string form):
// runs over the mask in column-major order, alternating 0s and 1s, starting with 0s.

/**
 * The run lengths of a compressed RLE string (pycocotools' rleFrString).
 * @param {string} text
 * @returns {number[]}
 */
export function countsFromString(text) {
  const counts = [];
  let p = 0;
  while (p < text.length) {
    let value = 0;
    let k = 0;
    let more = true;
    while (more) {
      const c = text.charCodeAt(p) - 48;
      // 5 bits per character, least significant first; arithmetic, not bit operations,
      // because runs of large masks need more than JavaScript's 32-bit integers.
      value += (c & 0x1f) * 2 ** (5 * k);
      more = (c & 0x20) !== 0;
      p += 1;
      k += 1;
      if (!more && c & 0x10) value -= 2 ** (5 * k);
    }
    // From the fourth run on, each is stored as the difference to the run two before.
    if (counts.length > 2) value += counts[counts.length - 2];
    counts.push(value);
  }
  return counts;
}

/**
 * A mask from its RLE.
 * @param {{size: number[], counts: string}} rle `size` is [H, W]
 * @returns {Uint8Array} H*W values in row-major order: 1 inside the mask, 0 outside
 */
export function decodeRle(rle) {
  const [height, width] = rle.size;
  const mask = new Uint8Array(height * width);
  let start = 0;
  let inside = false;
  for (const run of countsFromString(rle.counts)) {
    if (inside) {
      let x = Math.floor(start / height);
      let y = start - x * height;
      for (let i = 0; i < run; i += 1) {
        mask[y * width + x] = 1;
        y += 1;
        if (y === height) {
          y = 0;
          x += 1;
        }
      }
    }
    start += run;
    inside = !inside;
  }
  return mask;
}

/**
 * Area and bounding box of a mask, as pycocotools' `area` and `toBbox` give them.
 * @param {Uint8Array} mask H*W, row-major
 * @param {number} width
 * @param {number} height
 * @returns {{area: number, bbox: number[]}} bbox is [x, y, width, height] in pixels
 */
export function maskStats(mask, width, height) {
  let area = 0;
  let x0 = width;
  let y0 = height;
  let x1 = -1;
  let y1 = -1;
  for (let y = 0; y < height; y += 1) {
    const row = y * width;
    for (let x = 0; x < width; x += 1) {
      if (mask[row + x]) {
        area += 1;
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        y1 = y;
      }
    }
  }
  if (area === 0) return { area: 0, bbox: [0, 0, 0, 0] };
  return { area, bbox: [x0, y0, x1 - x0 + 1, y1 - y0 + 1] };
}
