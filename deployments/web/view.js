// The canvas: the image scaled to fit, each object's mask as a translucent fill with an
// outline, the selected object's prompts, and the mapping from screen to image pixels.

import { decodeRle } from "./rle.js";

const POSITIVE = "#16a34a";
const NEGATIVE = "#dc2626";

/** "#rrggbb" to [r, g, b]. */
function rgb(hex) {
  const n = Number.parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

export class View {
  /** @param {HTMLCanvasElement} canvas */
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.scratch = document.createElement("canvas");
    this.image = null; // {bitmap, width, height}
    this.dimmed = false;
    // Mask canvases by RLE string and colour, kept while their objects are drawn.
    this.masks = new Map();
    this.scale = 1;
    this.offset = { x: 0, y: 0 };
  }

  setImage(image) {
    this.image = image;
    this.masks.clear();
  }

  /** Match the canvas's pixels to its size on screen (and the screen's pixel ratio). */
  fit() {
    const ratio = window.devicePixelRatio || 1;
    const { width, height } = this.canvas.getBoundingClientRect();
    this.cssWidth = width;
    this.cssHeight = height;
    this.ratio = ratio;
    this.canvas.width = Math.max(1, Math.round(width * ratio));
    this.canvas.height = Math.max(1, Math.round(height * ratio));
    if (this.image) {
      const margin = 12;
      this.scale = Math.min(
        (width - 2 * margin) / this.image.width,
        (height - 2 * margin) / this.image.height,
      );
      this.offset = {
        x: (width - this.image.width * this.scale) / 2,
        y: (height - this.image.height * this.scale) / 2,
      };
    }
  }

  /**
   * Image pixel coordinates of a point on screen, or null outside the image.
   * @returns {{x: number, y: number} | null}
   */
  toImage(clientX, clientY, clamp = false) {
    if (!this.image) return null;
    const rect = this.canvas.getBoundingClientRect();
    let x = (clientX - rect.left - this.offset.x) / this.scale;
    let y = (clientY - rect.top - this.offset.y) / this.scale;
    const inside = x >= 0 && y >= 0 && x < this.image.width && y < this.image.height;
    if (!inside && !clamp) return null;
    x = Math.min(Math.max(x, 0), this.image.width - 0.01);
    y = Math.min(Math.max(y, 0), this.image.height - 0.01);
    return { x, y };
  }

  /** Canvas CSS-pixel coordinates of an image point. */
  toCanvas(x, y) {
    return { x: this.offset.x + x * this.scale, y: this.offset.y + y * this.scale };
  }

  /** A canvas of the mask's size, opaque `colour` inside the mask, transparent outside. */
  maskCanvas(rle, colour) {
    const key = `${colour}:${rle.counts}`;
    let entry = this.masks.get(key);
    if (!entry) {
      const [height, width] = rle.size;
      const mask = decodeRle(rle);
      const canvas = document.createElement("canvas");
      canvas.width = width;
      canvas.height = height;
      const ctx = canvas.getContext("2d");
      const pixels = ctx.createImageData(width, height);
      const [r, g, b] = rgb(colour);
      const data = pixels.data;
      for (let i = 0; i < mask.length; i += 1) {
        if (mask[i]) {
          const j = 4 * i;
          data[j] = r;
          data[j + 1] = g;
          data[j + 2] = b;
          data[j + 3] = 255;
        }
      }
      ctx.putImageData(pixels, 0, 0);
      entry = { canvas };
      this.masks.set(key, entry);
    }
    entry.used = true;
    return entry.canvas;
  }

  /**
   * Draw everything.
   * @param {object} scene
   * @param {Array<object>} scene.objects records: {id, rle, points, box}
   * @param {Map<number, {colour: string, visible: boolean}>} scene.meta
   * @param {number|null} scene.selected
   * @param {{x0: number, y0: number, x1: number, y1: number}|null} scene.drag box being drawn
   * @param {{x: number, y: number}|null} scene.cursor keyboard cursor, image pixels
   * @param {string} scene.hint text shown when there is no image
   */
  draw({ objects, meta, selected, drag, cursor, hint }) {
    const { ctx } = this;
    ctx.setTransform(this.ratio, 0, 0, this.ratio, 0, 0);
    ctx.clearRect(0, 0, this.cssWidth, this.cssHeight);
    if (!this.image) {
      ctx.fillStyle = "#6b7280";
      ctx.font = "16px system-ui, sans-serif";
      ctx.textAlign = "center";
      ctx.fillText(hint, this.cssWidth / 2, this.cssHeight / 2);
      return;
    }
    const { x: ox, y: oy } = this.offset;
    const w = this.image.width * this.scale;
    const h = this.image.height * this.scale;
    ctx.imageSmoothingEnabled = true;
    ctx.globalAlpha = this.dimmed ? 0.5 : 1;
    ctx.drawImage(this.image.bitmap, ox, oy, w, h);
    ctx.globalAlpha = 1;

    for (const entry of this.masks.values()) entry.used = false;
    for (const object of objects) {
      const look = meta.get(object.id);
      if (!object.rle || !look.visible) continue;
      const mask = this.maskCanvas(object.rle, look.colour);
      const isSelected = object.id === selected;
      ctx.imageSmoothingEnabled = false;
      ctx.globalAlpha = isSelected ? 0.55 : 0.38;
      ctx.drawImage(mask, ox, oy, w, h);
      ctx.globalAlpha = 1;
      if (isSelected) this.outline(mask, "#ffffff", 3);
      this.outline(mask, look.colour, isSelected ? 1.5 : 1.25);
    }
    for (const [key, entry] of this.masks) if (!entry.used) this.masks.delete(key);

    const current = objects.find((object) => object.id === selected);
    if (current) this.prompts(current, meta.get(current.id).colour);
    if (drag) this.box(drag, "#ffffff", [6, 4]);
    if (cursor) this.crosshair(cursor);
  }

  /** A ring `width` CSS pixels wide just outside the mask. */
  outline(mask, colour, width) {
    const { scratch } = this;
    scratch.width = this.canvas.width;
    scratch.height = this.canvas.height;
    const s = scratch.getContext("2d");
    s.setTransform(this.ratio, 0, 0, this.ratio, 0, 0);
    s.imageSmoothingEnabled = false;
    const { x: ox, y: oy } = this.offset;
    const w = this.image.width * this.scale;
    const h = this.image.height * this.scale;
    for (const [dx, dy] of [
      [-1, 0],
      [1, 0],
      [0, -1],
      [0, 1],
      [-0.7, -0.7],
      [0.7, -0.7],
      [-0.7, 0.7],
      [0.7, 0.7],
    ]) {
      s.drawImage(mask, ox + dx * width, oy + dy * width, w, h);
    }
    s.globalCompositeOperation = "destination-out";
    s.drawImage(mask, ox, oy, w, h);
    s.globalCompositeOperation = "source-in";
    s.fillStyle = colour;
    s.fillRect(0, 0, this.cssWidth, this.cssHeight);
    this.ctx.setTransform(1, 0, 0, 1, 0, 0);
    this.ctx.drawImage(scratch, 0, 0);
    this.ctx.setTransform(this.ratio, 0, 0, this.ratio, 0, 0);
  }

  prompts(object, colour) {
    if (object.box) this.box(object.box, colour, [8, 4]);
    const { ctx } = this;
    for (const point of object.points) {
      const { x, y } = this.toCanvas(point.x, point.y);
      ctx.beginPath();
      ctx.arc(x, y, 6, 0, 2 * Math.PI);
      ctx.fillStyle = point.positive ? POSITIVE : NEGATIVE;
      ctx.fill();
      ctx.lineWidth = 2;
      ctx.strokeStyle = "#ffffff";
      ctx.stroke();
      ctx.beginPath();
      ctx.moveTo(x - 3, y);
      ctx.lineTo(x + 3, y);
      if (point.positive) {
        ctx.moveTo(x, y - 3);
        ctx.lineTo(x, y + 3);
      }
      ctx.lineWidth = 1.5;
      ctx.stroke();
    }
  }

  /** A box given in image pixels {x0, y0, x1, y1}. */
  box(box, colour, dash) {
    const { ctx } = this;
    const a = this.toCanvas(box.x0, box.y0);
    const b = this.toCanvas(box.x1, box.y1);
    ctx.lineWidth = 2;
    ctx.setLineDash(dash);
    ctx.strokeStyle = "rgba(0, 0, 0, 0.6)";
    ctx.strokeRect(a.x + 1, a.y + 1, b.x - a.x, b.y - a.y);
    ctx.strokeStyle = colour;
    ctx.strokeRect(a.x, a.y, b.x - a.x, b.y - a.y);
    ctx.setLineDash([]);
  }

  crosshair(point) {
    const { ctx } = this;
    const { x, y } = this.toCanvas(point.x, point.y);
    ctx.lineWidth = 1;
    for (const [colour, shift] of [
      ["rgba(0, 0, 0, 0.7)", 1],
      ["#ffffff", 0],
    ]) {
      ctx.strokeStyle = colour;
      ctx.beginPath();
      ctx.moveTo(x - 10 + shift, y + shift);
      ctx.lineTo(x + 10 + shift, y + shift);
      ctx.moveTo(x + shift, y - 10 + shift);
      ctx.lineTo(x + shift, y + 10 + shift);
      ctx.stroke();
    }
  }
}
