// The video routes (/sam3/video/*) as the page uses them: a session started from a file or
// its frames, prompts on a frame, the propagation read line by line as the service streams it
// (application/x-ndjson), and the session closed when the page leaves it.

import { ApiError } from "./api.js";

/**
 * A data: URL of a file.
 * @param {Blob} file
 * @returns {Promise<string>}
 */
export function dataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

export class VideoApi {
  /** @param {import("./api.js").Api} api the page's client (key, base URL, call log) */
  constructor(api) {
    this.api = api;
  }

  /**
   * Start a session on a video file (MP4/WebM) or on its frames (pictures, in order).
   * @param {{video?: Blob, frames?: Blob[]}} source
   * @returns {Promise<{session_id: string, num_frames: number, width: number, height: number}>}
   */
  async start(source, onUpload) {
    const body = source.video
      ? { video: { type: "base64", value: await dataUrl(source.video) } }
      : {
          frames: await Promise.all(
            source.frames.map(async (frame) => ({ type: "base64", value: await dataUrl(frame) })),
          ),
        };
    return (await this.api.call("video/start_session", body, { onUpload })).body;
  }

  /**
   * A prompt on a frame; the frame's outputs come back (every object on it).
   * @returns {Promise<{frame_index: number, outputs: object[]}>}
   */
  async addPrompt(sessionId, prompt) {
    const body = { session_id: sessionId, format: "rle", ...prompt };
    return (await this.api.call("video/add_prompt", body)).body;
  }

  /**
   * The propagation's lines, each `{frame_index, outputs}` as the service computes it.
   * Aborting `signal` hangs up, which stops the propagation on the service.
   * @returns {AsyncGenerator<{frame_index: number, outputs: object[]}>}
   */
  async *propagate(sessionId, options, signal) {
    const route = "video/propagate_in_video";
    const started = performance.now();
    const body = { session_id: sessionId, format: "rle", ...options };
    let response;
    try {
      response = await fetch(new URL(`sam3/${route}`, this.api.base), {
        method: "POST",
        headers: this.headers(),
        body: JSON.stringify(body),
        signal,
      });
    } catch (error) {
      if (error.name === "AbortError") return;
      throw new ApiError(0, "unreachable", "the service cannot be reached");
    }
    const call = {
      route,
      status: response.status,
      ms: 0,
      serviceMs: null,
      cache: null,
      logits: null,
      replica: response.headers.get("x-sam3-replica"),
      imageId: null,
      body: null,
    };
    if (!response.ok) {
      call.body = await response.json().catch(() => ({ message: response.statusText }));
      call.ms = performance.now() - started;
      this.api.onCall(call);
      throw new ApiError(response.status, call.body?.code ?? "http_error", call.body?.message);
    }
    let frames = 0;
    try {
      for await (const line of ndjson(response.body)) {
        if (line.error) {
          // The stream had started (200); its last line says why it ended early.
          throw new Error(`propagate_in_video ended early: ${line.error.code}: ${line.error.message}`);
        }
        frames += 1;
        yield line;
      }
    } catch (error) {
      if (error.name === "AbortError") return;
      throw error;
    } finally {
      const note = `${frames} frames streamed${signal.aborted ? ", stopped" : ""}`;
      this.api.onCall({ ...call, ms: performance.now() - started, note });
    }
  }

  /** Close the session; `keepalive` lets the request outlive a closing tab. */
  close(sessionId) {
    return fetch(new URL("sam3/video/close_session", this.api.base), {
      method: "POST",
      headers: this.headers(),
      body: JSON.stringify({ session_id: sessionId }),
      keepalive: true,
    }).catch(() => null);
  }

  headers() {
    const headers = { "content-type": "application/json" };
    if (this.api.key) headers.authorization = `Bearer ${this.api.key}`;
    return headers;
  }
}

/** The JSON values of a newline-delimited JSON stream, as its lines arrive. */
async function* ndjson(stream) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end = buffer.indexOf("\n");
    while (end >= 0) {
      const line = buffer.slice(0, end).trim();
      buffer = buffer.slice(end + 1);
      if (line) yield JSON.parse(line);
      end = buffer.indexOf("\n");
    }
  }
  if (buffer.trim()) yield JSON.parse(buffer);
}
