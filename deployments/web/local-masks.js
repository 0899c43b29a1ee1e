// What the server does after its decoder, done in the page for a mask decoded locally
// (sam3_core/model.py `InteractiveSam3.decode`, sam3's `SAM2Transforms.postprocess_masks`):
// pick the proposal, fill small holes, upsample bilinearly to the image's size, threshold,
// and encode as COCO RLE. Plain functions over typed arrays, so the Web Worker runs them.

/**
 * The proposal the server keeps, from the decoder's four (sam3_core/onnx_decoder.py
 * `select_proposal`): the best of the three multimask ones; for one mask, token 0 unless its
 * stability is below sam3's threshold, then the best of the three.
 * @param {Float32Array} masks (4, L, L) low-res logits
 * @param {Float32Array} scores (4,)
 * @param {boolean} multimask
 * @param {{stability_delta: number, stability_thresh: number}} settings
 * @returns {{index: number, logits: Float32Array, score: number}}
 */
export function chooseProposal(masks, scores, multimask, settings) {
  const area = masks.length / 4;
  const proposal = (index) => ({
    index,
    logits: masks.subarray(index * area, (index + 1) * area),
    score: scores[index],
  });
  let best = 1;
  for (let i = 2; i < 4; i += 1) if (scores[i] > scores[best]) best = i;
  if (!multimask) {
    const single = masks.subarray(0, area);
    const delta = settings.stability_delta;
    let inner = 0;
    let outer = 0;
    for (let i = 0; i < area; i += 1) {
      if (single[i] > delta) inner += 1;
      if (single[i] > -delta) outer += 1;
    }
    const stability = outer > 0 ? Math.fround(inner / outer) : 1;
    if (stability >= Math.fround(settings.stability_thresh)) return proposal(0);
  }
  return proposal(best);
}

/**
 * sam3's hole filling: background regions (logit <= threshold, 8-connected, as
 * scikit-image labels them) of at most `maxArea` pixels become foreground (threshold + 10).
 * Labelled in one raster pass with union-find (a flood fill per pixel is several times
 * slower on a mask whose background is one large region).
 * @param {Float32Array} logits (L, L), changed in place
 */
export function fillHoles(logits, side, threshold, maxArea) {
  if (maxArea <= 0) return logits;
  const parent = new Int32Array(logits.length).fill(-1); // -1: foreground
  const find = (i) => {
    let root = i;
    while (parent[root] !== root) root = parent[root];
    while (parent[i] !== root) {
      const next = parent[i];
      parent[i] = root;
      i = next;
    }
    return root;
  };
  const join = (a, b) => {
    const ra = find(a);
    const rb = find(b);
    if (ra < rb) parent[rb] = ra;
    else if (rb < ra) parent[ra] = rb;
  };
  for (let y = 0; y < side; y += 1) {
    for (let x = 0, i = y * side; x < side; x += 1, i += 1) {
      if (!(logits[i] <= threshold)) continue;
      const up = i - side;
      const upRight = y > 0 && x < side - 1 && parent[up + 1] >= 0;
      // The left and upper neighbours touch the upper-left one (and the upper one its
      // right): only neighbours not joined already through another are joined here.
      if (x > 0 && parent[i - 1] >= 0) {
        parent[i] = parent[i - 1];
        if (upRight && parent[up] < 0) join(i, up + 1);
      } else if (y > 0 && parent[up] >= 0) {
        parent[i] = parent[up];
      } else {
        parent[i] = i;
        if (y > 0 && x > 0 && parent[up - 1] >= 0) join(i, up - 1);
        if (upRight) join(i, up + 1);
      }
    }
  }
  const size = new Int32Array(logits.length);
  for (let i = 0; i < logits.length; i += 1) if (parent[i] >= 0) size[find(i)] += 1;
  const filled = Math.fround(threshold + 10);
  for (let i = 0; i < logits.length; i += 1) {
    if (parent[i] >= 0 && size[find(i)] <= maxArea) logits[i] = filled;
  }
  return logits;
}

/** Source indices and weights of torch's bilinear resize (align_corners=False), in float32. */
function axis(inSize, outSize) {
  const ratio = Math.fround(inSize / outSize);
  const low = new Int32Array(outSize);
  const high = new Int32Array(outSize);
  const w0 = new Float32Array(outSize);
  const w1 = new Float32Array(outSize);
  for (let i = 0; i < outSize; i += 1) {
    let real = Math.fround(Math.fround(ratio * Math.fround(i + 0.5)) - 0.5);
    if (real < 0) real = 0;
    const index = Math.floor(real);
    const lambda = Math.min(Math.max(Math.fround(real - index), 0), 1);
    low[i] = index;
    high[i] = index + (index < inSize - 1 ? 1 : 0);
    w1[i] = lambda;
    w0[i] = Math.fround(1 - lambda);
  }
  return { low, high, w0, w1 };
}

/**
 * The low-res logits upsampled to (H, W), thresholded, as COCO RLE, without an H*W mask in
 * memory. torch's order of operations (each low-res row interpolated along x, then the two
 * rows along y, in float32), so the masks are the server's bit for bit; the x pass is done
 * once per low-res row (L*W values, stored column-major) rather than once per pixel, and a
 * run of output rows between the same two low-res rows is decided at once when both are on
 * the same side of a zero threshold (a convex combination keeps the sign).
 * @param {Float32Array} logits (L, L)
 * @returns {{size: number[], counts: string, area: number}}
 */
export function upsampleToRle(logits, side, height, width, threshold) {
  const ys = axis(side, height);
  const xs = axis(side, width);
  const f = Math.fround;
  // along[x * side + r]: low-res row r interpolated at output column x.
  const along = new Float32Array(width * side);
  for (let x = 0; x < width; x += 1) {
    const x0 = xs.low[x];
    const x1 = xs.high[x];
    const a = xs.w0[x];
    const b = xs.w1[x];
    const at = x * side;
    for (let r = 0, row = 0; r < side; r += 1, row += side) {
      along[at + r] = f(logits[row + x0] * a) + f(logits[row + x1] * b);
    }
  }
  // Output rows grouped by their pair of low-res rows: [start, end) of each group.
  const groups = [];
  for (let y = 0; y < height; ) {
    let end = y + 1;
    while (end < height && ys.low[end] === ys.low[y] && ys.high[end] === ys.high[y]) end += 1;
    groups.push(y, end);
    y = end;
  }
  const whole = threshold === 0;
  // Sure of the sign: away from float32's denormals (a product of one could round to 0).
  const TINY = 1e-30;
  const counts = [];
  let run = 0;
  let inside = false;
  let area = 0;
  const flip = () => {
    counts.push(run);
    run = 0;
    inside = !inside;
  };
  for (let x = 0; x < width; x += 1) {
    const at = x * side;
    for (let g = 0; g < groups.length; g += 2) {
      const start = groups[g];
      const end = groups[g + 1];
      const top = along[at + ys.low[start]];
      const bottom = along[at + ys.high[start]];
      if (whole && ((top <= 0 && bottom <= 0) || (top > TINY && bottom > TINY))) {
        const on = top > 0;
        if (on !== inside) flip();
        run += end - start;
        if (on) area += end - start;
        continue;
      }
      for (let y = start; y < end; y += 1) {
        const on = f(f(top * ys.w0[y]) + f(bottom * ys.w1[y])) > threshold;
        if (on !== inside) flip();
        run += 1;
        if (on) area += 1;
      }
    }
  }
  counts.push(run);
  return { size: [height, width], counts: countsToString(counts), area };
}

/** pycocotools' rleToString: run lengths as its compressed string. */
export function countsToString(counts) {
  // At most 7 characters a run (32-bit counts, 5 bits a character), written as bytes.
  const bytes = new Uint8Array(counts.length * 7);
  let n = 0;
  for (let i = 0; i < counts.length; i += 1) {
    let x = counts[i];
    if (i > 2) x -= counts[i - 2];
    let more = true;
    while (more) {
      let c = x & 0x1f;
      x >>= 5;
      more = c & 0x10 ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      bytes[n++] = c + 48;
    }
  }
  return new TextDecoder("latin1").decode(bytes.subarray(0, n));
}
