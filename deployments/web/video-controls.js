// The video mode's controls: its keys, buttons, slider and forms.

import { $ } from "./context.js";
import { showError } from "./status.js";
import {
  closeVideo,
  exportAs,
  leaving,
  openVideo,
  play,
  propagateAll,
  removeObject,
  selectObject,
  showFrame,
  video,
  videoConcept,
} from "./video.js";

/** The video mode's keys; true when the key was one of them. */
export function videoKey(event) {
  const keys = {
    ",": () => showFrame(video.index - 1),
    ".": () => showFrame(video.index + 1),
    k: play,
    p: propagateAll,
    n: () => selectObject(null),
    Escape: () => selectObject(null),
    Delete: () => video.selected !== null && removeObject(video.selected),
  };
  const action = keys[event.key.length === 1 ? event.key.toLowerCase() : event.key];
  if (!action) return false;
  event.preventDefault();
  action();
  return true;
}

/** The video mode's buttons, slider and forms (called once, when the page starts). */
export function wireVideo() {
  $("video-input").addEventListener("change", (event) => {
    openVideo(event.target.files).catch(showError);
    event.target.value = "";
  });
  $("video-slider").addEventListener("input", (event) => {
    video.follow = false;
    showFrame(Number(event.target.value));
  });
  $("play").addEventListener("click", play);
  $("propagate").addEventListener("click", () => propagateAll().catch(showError));
  $("stop-propagation").addEventListener("click", () => video.propagation?.abort());
  $("video-new-object").addEventListener("click", () => selectObject(null));
  $("close-video").addEventListener("click", () => closeVideo().catch(showError));
  $("export-video-coco").addEventListener("click", () => exportAs("coco"));
  $("export-ytvis").addEventListener("click", () => exportAs("ytvis"));
  $("video-concept-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("video-concept").value.trim();
    if (text) videoConcept(text).catch(showError);
  });
  addEventListener("pagehide", leaving);
}
