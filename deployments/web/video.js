// The page's video mode: a video (or its frames) opened as a session on the service
// (/sam3/video/*), its frames scrubbed and played with their masks, clicks, boxes and concepts
// on any frame, the objects propagated through the video with progress as frames stream in,
// and the result exported (COCO per frame, YouTube-VIS).
//
// sam3's video model refines or adds an object by clicks only on frames it has already
// processed, and its propagation of clicked objects reads what a first pass over the whole
// video left: the page runs that pass when the video opens (and again after a concept or box
// prompt, which starts sam3's tracks over), before taking clicks.

import { $, PALETTE, api, round1, state, view } from "./context.js";
import { download } from "./export.js";
import { render } from "./render.js";
import { setStatus, showError, showProgress } from "./status.js";
import { VideoApi } from "./video-api.js";
import { cocoPerFrame, youtubeVis } from "./video-export.js";
import { framesOfPictures, framesOfVideo } from "./video-frames.js";
import { renderTracked } from "./video-objects.js";

// Made on first use: this module is part of an import cycle with context.js (render.js draws
// the video), so the context's values are not there yet while the modules load.
let client = null;
const videoApi = () => (client ??= new VideoApi(api));

const fresh = () => ({
  active: false,
  session: null, // {session_id, num_frames, width, height}
  name: "",
  frameNames: [],
  bitmaps: [],
  fps: 10,
  index: 0,
  masks: [], // per frame: Map obj_id -> {rle, score}
  objects: new Map(), // obj_id -> {label, colour, visible}
  points: new Map(), // "frame:obj_id" -> [{x, y, positive}] in frame pixels
  selected: null,
  passed: false, // sam3 has been through every frame since its tracks last started over
  cutShort: false, // that pass was stopped (or failed) before its end
  propagation: null, // the AbortController of the stream being read
  follow: true, // show each frame as it streams in, until the person scrubs
  playing: null,
  busy: false,
});

export const video = fresh();

const pointsKey = (frame, objId) => `${frame}:${objId}`;
const stem = () => video.name.replace(/\.[^.]+$/, "") || "video";

function track(objId, label = "object") {
  if (!video.objects.has(objId)) {
    const colour = PALETTE[(video.objects.size + objId) % PALETTE.length];
    video.objects.set(objId, { label, colour, visible: true });
  }
}

/** A frame's outputs (every object sam3 has on it) replace what the page showed there. */
function apply(frameIndex, outputs, label = "object") {
  const masks = new Map();
  for (const output of outputs) {
    track(output.obj_id, label);
    masks.set(output.obj_id, { rle: output.mask, score: output.score });
  }
  video.masks[frameIndex] = masks;
}

function showMode(active) {
  video.active = active;
  for (const element of document.querySelectorAll(".video-only")) element.hidden = !active;
  for (const element of document.querySelectorAll(".image-only")) element.hidden = active;
}

/**
 * Open a video (an MP4/WebM file, or pictures as its frames): start its session, decode its
 * frames for display, and run sam3's first pass over it.
 * @param {FileList|File[]} fileList
 */
export async function openVideo(fileList) {
  const files = [...fileList];
  const file = files.find((f) => f.type.startsWith("video/") || /\.(mp4|webm)$/i.test(f.name));
  const pictures = files
    .filter((f) => f.type.startsWith("image/"))
    .sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
  if (!file && !pictures.length) {
    setStatus("Open an MP4 or WebM file, or a video's frames as pictures.", true);
    return;
  }
  await closeVideo();
  showMode(true);
  video.name = file ? file.name : pictures[0].name;
  view.setImage(null);
  render();
  try {
    showProgress("Sending the video…", 0);
    const source = file ? { video: file } : { frames: pictures };
    const session = await videoApi().start(source, (fraction) =>
      showProgress(`Sending the video… ${Math.round(fraction * 100)} %`, fraction),
    );
    video.session = session;
    const count = session.num_frames;
    const decoded = file
      ? await framesOfVideo(file, count, (done) =>
          showProgress(`Decoding frames… ${done} / ${count}`, done / count),
        )
      : await framesOfPictures(pictures);
    video.bitmaps = decoded.bitmaps;
    video.fps = decoded.fps;
    video.frameNames = file
      ? decoded.bitmaps.map((_, i) => `${stem()}/${String(i).padStart(5, "0")}.jpg`)
      : pictures.map((picture) => `${stem()}/${picture.name}`);
    video.masks = Array.from({ length: count }, () => new Map());
    $("video-slider").max = String(count - 1);
    $("video-info").textContent = `${video.name} · ${count} frames · ${session.width}×${session.height}`;
    showProgress(null);
    showFrame(0);
    view.fit();
    await firstPass(0);
  } catch (error) {
    showProgress(null);
    showError(error);
  }
  draw();
}

/** sam3's pass over every frame (its detector's), which clicks need before they are taken. */
async function firstPass(from) {
  if (video.cutShort) {
    // sam3 counts a pass it began as done (its next one only fetches what the first left):
    // after one cut short, the session starts over.
    try {
      await api.call("video/reset_session", { session_id: video.session.session_id });
    } catch (error) {
      showError(error);
      return false;
    }
    video.masks = video.masks.map(() => new Map());
    video.points = new Map();
    video.objects = new Map();
    video.selected = null;
  }
  const done = await propagate(
    { propagation_direction: "both", start_frame_index: from },
    "sam3's first pass over the video",
  );
  video.passed = done;
  video.cutShort = !done;
  if (done) setStatus(`${video.name}: ready. Click an object on any frame, then propagate.`);
  return done;
}

/** Close the session (if any) and go back to the images. */
export async function closeVideo() {
  video.propagation?.abort();
  stopPlaying();
  const session = video.session;
  Object.assign(video, fresh());
  showMode(false);
  if (session) await videoApi().close(session.session_id);
  renderObjects();
  view.setImage(state.image);
  view.fit();
  render();
}

/** Close the session as the tab closes (a keepalive request). */
export function leaving() {
  if (video.session) videoApi().close(video.session.session_id);
}

export function showFrame(index) {
  if (!video.session) return;
  const count = video.session.num_frames;
  video.index = Math.min(Math.max(index, 0), count - 1);
  const bitmap = video.bitmaps[video.index];
  if (bitmap) view.setImage({ bitmap, width: bitmap.width, height: bitmap.height });
  $("video-slider").value = String(video.index);
  $("video-frame").textContent = `${video.index + 1} / ${count}`;
  $("video-frame").dataset.index = String(video.index);
  draw();
}

/** The frame with its objects' masks and the selected object's clicks on it. */
export function draw() {
  if (!video.active) return; // a stream's last step after the video was closed
  const frame = video.masks[video.index] ?? new Map();
  const objects = [...frame].map(([id, mask]) => ({
    id,
    rle: mask.rle,
    box: null,
    points: video.points.get(pointsKey(video.index, id)) ?? [],
  }));
  const selected = video.selected;
  if (selected !== null && !frame.has(selected)) {
    const points = video.points.get(pointsKey(video.index, selected)) ?? [];
    objects.push({ id: selected, rle: null, box: null, points });
  }
  view.draw({
    objects,
    meta: video.objects,
    selected,
    drag: state.drag?.box ?? null,
    cursor: null,
    hint: "Opening the video…",
  });
  const idle = video.session && !video.propagation && !video.busy;
  $("propagate").disabled = !idle || !video.passed || !video.objects.size;
  $("stop-propagation").hidden = !video.propagation;
  $("play").disabled = !video.session;
  $("play").textContent = video.playing ? "⏸" : "▶";
  for (const id of ["export-video-coco", "export-ytvis"]) $(id).disabled = !video.objects.size;
  renderObjects();
}

function ready() {
  if (video.propagation || video.busy) {
    setStatus("Wait for the request under way (or stop the propagation).", true);
    return false;
  }
  return Boolean(video.session);
}

/**
 * A click on the shown frame: refines the selected object there (all of its clicks on this
 * frame are sent, as sam3 replaces an object's points on a frame), or starts a new one.
 */
export async function videoClick(at, positive) {
  if (!ready()) return;
  const frameIndex = video.index;
  if (!video.passed) {
    if (!(await firstPass(frameIndex))) return;
    showFrame(frameIndex); // the pass showed its frames as they came
  }
  let objId = video.selected;
  if (objId === null) {
    objId = Math.max(0, ...video.objects.keys()) + 1;
    track(objId);
    video.selected = objId;
  }
  const key = pointsKey(frameIndex, objId);
  const before = video.points.get(key) ?? [];
  const points = [...before, { x: round1(at.x), y: round1(at.y), positive }];
  video.points.set(key, points);
  const { width, height } = video.session;
  await prompt(
    {
      frame_index: frameIndex,
      obj_id: objId,
      points: points.map((p) => [p.x / width, p.y / height]),
      point_labels: points.map((p) => (p.positive ? 1 : 0)),
    },
    () => video.points.set(key, before),
  );
  if (!video.masks[frameIndex].has(objId)) {
    setStatus(`${$("status").textContent} · no mask for object ${objId} on this frame`);
  }
}

/** A box or a concept: sam3 finds every object like it and starts its tracks over. */
export async function videoConcept(concept) {
  if (!ready()) return;
  const { width, height } = video.session;
  const body = { frame_index: video.index };
  let label = "object";
  if (typeof concept === "string") {
    body.text = label = concept;
  } else {
    const { x0, y0, x1, y1 } = concept;
    body.bounding_boxes = [[x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height]];
    body.bounding_box_labels = [1];
  }
  const kept = { masks: video.masks, points: video.points, objects: video.objects };
  video.masks = video.masks.map(() => new Map());
  video.points = new Map();
  video.objects = new Map();
  video.selected = null;
  video.passed = false;
  const found = await prompt(body, () => Object.assign(video, kept), label);
  if (found) setStatus(`${$("status").textContent} · ${found.outputs.length} found`);
}

async function prompt(body, undo, label) {
  video.busy = true;
  draw();
  try {
    const answer = await videoApi().addPrompt(video.session.session_id, body);
    apply(answer.frame_index, answer.outputs, label);
    return answer;
  } catch (error) {
    undo();
    showError(error);
    return null;
  } finally {
    video.busy = false;
    draw();
  }
}

/**
 * Read a propagation, each frame's outputs shown as they arrive; true when every frame came.
 * @param {object} options propagate_in_video's fields
 */
async function propagate(options, what = "propagate_in_video") {
  const count = video.session.num_frames;
  const controller = new AbortController();
  const seen = new Set();
  const progress = () => {
    $("video-progress").value = seen.size / count;
    $("video-progress-text").textContent = `${seen.size} / ${count} frames`;
  };
  video.propagation = controller;
  video.follow = true;
  progress();
  setStatus(`${what}…`);
  draw();
  try {
    for await (const line of videoApi().propagate(video.session.session_id, options, controller.signal)) {
      apply(line.frame_index, line.outputs);
      seen.add(line.frame_index);
      progress();
      if (video.follow) showFrame(line.frame_index);
    }
  } catch (error) {
    showError(error);
  } finally {
    video.propagation = null;
    draw();
  }
  if (controller.signal.aborted) setStatus(`${what}: stopped after ${seen.size} frames`);
  return !controller.signal.aborted && seen.size === count;
}

export async function propagateAll() {
  if (!ready() || !video.passed) return;
  if (await propagate({ propagation_direction: "both" })) {
    setStatus(`${$("status").textContent} · every frame tracked`);
  }
}

export function play() {
  if (video.playing) return stopPlaying();
  if (!video.session) return;
  if (video.index === video.session.num_frames - 1) showFrame(0);
  video.playing = setInterval(() => {
    if (video.index >= video.session.num_frames - 1) return stopPlaying();
    showFrame(video.index + 1);
  }, 1000 / video.fps);
  draw();
}

function stopPlaying() {
  clearInterval(video.playing);
  video.playing = null;
  if (video.active) draw();
}

export async function removeObject(objId) {
  if (!ready()) return;
  video.busy = true;
  try {
    await api.call("video/remove_object", { session_id: video.session.session_id, obj_id: objId });
    video.objects.delete(objId);
    for (const frame of video.masks) frame.delete(objId);
    for (const key of [...video.points.keys()]) {
      if (key.endsWith(`:${objId}`)) video.points.delete(key);
    }
    if (video.selected === objId) video.selected = null;
  } catch (error) {
    showError(error);
  } finally {
    video.busy = false;
    draw();
  }
}

function renderObjects() {
  renderTracked($("video-objects"), video, {
    select: selectObject,
    remove: removeObject,
  });
}

export function exportAs(kind) {
  const tracked = {
    name: video.name,
    width: video.session.width,
    height: video.session.height,
    frameNames: video.frameNames,
    objects: video.objects,
    masks: video.masks,
  };
  const [document_, suffix] =
    kind === "coco" ? [cocoPerFrame(tracked), "coco"] : [youtubeVis(tracked), "ytvis"];
  const blob = new Blob([JSON.stringify(document_)], { type: "application/json" });
  download(blob, `${stem()}.${suffix}.json`);
}

/** Select an object (null: the next click starts a new one). */
export function selectObject(objId) {
  video.selected = objId;
  draw();
}
