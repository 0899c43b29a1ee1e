// The status line, the request log and the progress overlay: what the page says about each
// call it made and about what it is doing.

import { ApiError } from "./api.js";

const REQUEST_LOG = 30;

const $ = (id) => document.getElementById(id);

export function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

export function describe(call) {
  if (call.status === 404 && call.body?.code === "image_not_cached") {
    return [`${call.route}: the image is no longer cached on its replica; sending it again`, false];
  }
  if (call.status >= 400) {
    const code = call.body?.code ? ` ${call.body.code}` : "";
    let text = `${call.route}: ${call.status}${code}: ${call.body?.message ?? ""}`;
    if (call.status === 401) text += " (enter the service's API key above)";
    return [text, true];
  }
  const parts = [call.route, `${Math.round(call.ms)} ms`];
  if (call.serviceMs !== null) parts.push(`service ${Math.round(call.serviceMs)} ms`);
  if (call.cache) parts.push(`embedding ${call.cache}`);
  if (call.logits) parts.push(`logits ${call.logits}`);
  if (call.replica) parts.push(`replica ${call.replica}`);
  if (call.note) parts.push(call.note);
  return [parts.join(" · "), false];
}

export const PREFETCHED = "prefetched for the next image";

export function showCall(call) {
  const [text, isError] = describe(call);
  // A prefetch runs behind the image being annotated: its answer goes to the log only.
  if (isError || call.note !== PREFETCHED) setStatus(text, isError);
  if (call.status === 401) $("api-key").focus();
  const item = document.createElement("li");
  item.textContent = `${call.status} ${text}`;
  const log = $("requests");
  log.prepend(item);
  while (log.children.length > REQUEST_LOG) log.lastElementChild.remove();
}

export function showError(error) {
  // HTTP errors were shown with their call; this is for the rest (no service, a bug).
  if (error instanceof ApiError && error.status > 0) return;
  setStatus(error.message, true);
}

export function showProgress(text, fraction) {
  $("progress").hidden = text === null;
  if (text === null) return;
  $("progress-text").textContent = text;
  const bar = $("progress-bar");
  if (fraction === null) bar.removeAttribute("value");
  else bar.value = fraction;
}

/** The decode-path hook and the status line's note on who decoded the last mask. */
export function showDecodePath(path, note) {
  $("decode-path").textContent = path;
  $("decode-path").title = note;
  setStatus(`${$("status").textContent} · ${note}`);
}
