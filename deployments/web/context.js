// What the page's modules share: its elements, the view, the API client, the local decoder,
// the open image's state and its history of object lists.
//
// History: every change of the objects (a click, a box, a concept search, a deletion) is a
// new list of object records. A record is never changed once made, except that the mask of
// its prompts fills in when the service answers; so undo and redo show each step's mask
// without asking again. Labels, colours and visibility are kept apart, per object id.

import { Api } from "./api.js";
import { LocalDecoder } from "./local-decoder.js";
import { render } from "./render.js";
import { showCall } from "./status.js";
import { View } from "./view.js";

export const PALETTE = [
  "#f97316",
  "#22d3ee",
  "#a3e635",
  "#e879f9",
  "#facc15",
  "#60a5fa",
  "#f472b6",
  "#34d399",
  "#fb7185",
  "#c084fc",
  "#2dd4bf",
  "#fbbf24",
];
export const DRAG_PX = 5; // a press that moves further is a box, not a click
export const MIN_BOX_PX = 2;
export const KEY_STORAGE = "sam3-serve.api-key";
export const HISTORY_LIMIT = 300;

export const $ = (id) => document.getElementById(id);
export const canvas = $("canvas");
export const view = new View(canvas);
export const api = new Api({ onCall: showCall });
export const decodeParam = new URLSearchParams(location.search).get("decode");
export const local = new LocalDecoder(api, {
  encoding: decodeParam === "int8" ? "int8" : "float16",
  disabled: decodeParam === "server" ? "the page's address asks for it (?decode=server)" : null,
});

/**
 * @typedef {object} ObjectRecord
 * @property {number} id
 * @property {Array<{x: number, y: number, positive: boolean}>} points image pixels
 * @property {{x0: number, y0: number, x1: number, y1: number}|null} box image pixels
 * @property {{size: number[], counts: string}|null} rle the mask, COCO RLE
 * @property {number|null} score
 * @property {boolean} pending a request for these prompts is on its way
 * @property {string|null} error
 */

export const state = {
  image: null, // the dataset's open entry: {name, blob, dataUrl, id, width, height, bitmap, saved}
  dataset: [], // every image opened together, in order
  index: 0,
  /** @type {ObjectRecord[][]} */
  history: [[]],
  at: 0,
  selected: null,
  meta: new Map(), // id -> {label, colour, visible}
  nextId: 1,
  embedding: null, // the embed in flight (a Promise)
  drag: null,
  cursor: null, // keyboard cursor, image pixels
  lastLabel: "object",
  findingConcept: false,
};

export const objects = () => state.history[state.at];
export const selectedRecord = () => objects().find((object) => object.id === state.selected) ?? null;
export const round1 = (value) => Math.round(value * 10) / 10;

export function commit(next) {
  state.history = state.history.slice(Math.max(0, state.at + 1 - HISTORY_LIMIT), state.at + 1);
  state.history.push(next);
  state.at = state.history.length - 1;
  render();
}

export function createObject(label = state.lastLabel) {
  const id = state.nextId++;
  state.meta.set(id, { label, colour: PALETTE[(id - 1) % PALETTE.length], visible: true });
  return { id, points: [], box: null, rle: null, score: null, pending: false, error: null };
}

export function select(id) {
  state.selected = id;
  render();
}
