// The service's public API (README, "Call it"), as the page uses it: every call is timed and
// reported with the headers that say how it was served (cache hit or miss, replica).

/** A refused or failed call: `status` 0 when the service could not be reached. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * What one HTTP call gave.
 * @typedef {object} Call
 * @property {string} route e.g. "visual_segment"
 * @property {number} status
 * @property {number} ms latency seen by the page
 * @property {number|null} serviceMs time spent in the service (its `time` field)
 * @property {string|null} cache x-sam3-embedding-cache: hit, miss or handoff
 * @property {string|null} logits x-sam3-logits-cache
 * @property {string|null} replica x-sam3-replica
 * @property {string|null} imageId x-sam3-image-id
 * @property {any} body the JSON response
 * @property {string} [note] what the page did about it
 */

const RETRY_AFTER_MAX_S = 5;

export class Api {
  /**
   * @param {{base?: string, onCall?: (call: Call) => void}} options `base` is the URL the
   *   API's paths are relative to (the page's own, so a route prefix works too)
   */
  constructor({ base = document.baseURI, onCall = () => {} } = {}) {
    this.base = base;
    this.key = "";
    this.onCall = onCall;
  }

  /**
   * POST a JSON body. Resolves with the call whatever its status; rejects only when the
   * service cannot be reached.
   * @param {string} route the path after "sam3/"
   * @param {object} body
   * @param {{onUpload?: (fraction: number) => void}} [options]
   * @returns {Promise<Call>}
   */
  post(route, body, { onUpload } = {}) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", new URL(`sam3/${route}`, this.base));
      xhr.setRequestHeader("content-type", "application/json");
      if (this.key) xhr.setRequestHeader("authorization", `Bearer ${this.key}`);
      if (onUpload) {
        xhr.upload.onprogress = (event) => {
          if (event.lengthComputable) onUpload(event.loaded / event.total);
        };
      }
      const started = performance.now();
      xhr.onload = () => {
        let json = null;
        try {
          json = JSON.parse(xhr.responseText);
        } catch {
          json = { message: xhr.responseText.slice(0, 200) || xhr.statusText };
        }
        resolve({
          route,
          status: xhr.status,
          ms: performance.now() - started,
          serviceMs: typeof json?.time === "number" ? json.time * 1000 : null,
          cache: xhr.getResponseHeader("x-sam3-embedding-cache"),
          logits: xhr.getResponseHeader("x-sam3-logits-cache"),
          replica: xhr.getResponseHeader("x-sam3-replica"),
          imageId: xhr.getResponseHeader("x-sam3-image-id"),
          retryAfter: Number(xhr.getResponseHeader("retry-after")),
          body: json,
        });
      };
      xhr.onerror = () =>
        reject(new ApiError(0, "unreachable", "the service cannot be reached"));
      xhr.send(JSON.stringify(body));
    });
  }

  /**
   * POST, report the call, and return it when it succeeded. A 503 with a short
   * Retry-After is retried once after waiting.
   * @param {{onUpload?: (fraction: number) => void, note?: string}} [options] `note` is
   *   reported with the call
   * @returns {Promise<Call>}
   * @throws {ApiError}
   */
  async call(route, body, options = {}) {
    let call = await this.post(route, body, options);
    if (call.status === 503 && call.retryAfter <= RETRY_AFTER_MAX_S) {
      this.onCall({ ...call, note: `busy: retrying in ${call.retryAfter || 1} s` });
      await new Promise((done) => setTimeout(done, (call.retryAfter || 1) * 1000));
      call = await this.post(route, body, options);
    }
    this.onCall(options.note ? { ...call, note: options.note } : call);
    if (call.status >= 200 && call.status < 300) return call;
    const code = call.body?.code ?? "http_error";
    const message = call.body?.message ?? `HTTP ${call.status}`;
    throw new ApiError(call.status, code, message);
  }

  /**
   * Embed an image; the id it is cached under comes back.
   * @param {string} dataUrl the image file as a data: URL
   * @param {string|null} imageId null: the service names it (SHA-256 of the bytes)
   * @returns {Promise<string>}
   */
  async embed(dataUrl, imageId, onUpload) {
    const body = { image: { type: "base64", value: dataUrl } };
    if (imageId) body.image_id = imageId;
    const call = await this.call("embed_image", body, { onUpload });
    return call.body.image_id;
  }

  /**
   * A request about an embedded image, sent by `image_id` only. When its replica no longer
   * holds the image (evicted, moved by a scale event: 404 image_not_cached) the image is sent
   * again and the request retried once.
   * @param {{id: string, dataUrl: string}} image
   * @returns {Promise<Call>}
   */
  async byId(image, route, body) {
    try {
      return await this.call(route, { ...body, image_id: image.id });
    } catch (error) {
      if (!(error instanceof ApiError) || error.code !== "image_not_cached") throw error;
    }
    await this.embed(image.dataUrl, image.id);
    const note = "image sent again: its replica no longer held it";
    return this.call(route, { ...body, image_id: image.id }, { note });
  }

  /**
   * One object's mask from its prompt, refined from the logits of its earlier prompts.
   * @param {{box?: object, points?: object[]}} prompt visual_segment's form (box centre)
   * @returns {Promise<{masks: {size: number[], counts: string}, confidence: number}>}
   */
  async segment(image, prompt, multimask) {
    const call = await this.byId(image, "visual_segment", {
      prompts: [prompt],
      format: "rle",
      multimask_output: multimask,
      save_logits_to_cache: true,
      load_logits_from_cache: true,
    });
    return call.body.predictions[0];
  }

  /**
   * What the service serves (GET /sam3/model): SAM3's weights, a demo model or random
   * weights. Null where it does not say: an older service, or a key it needs first.
   * @returns {Promise<{weights: string, name: string, description: string, concepts: string,
   *   held_out: Object<string, number>}|null>}
   */
  async model() {
    const headers = this.key ? { authorization: `Bearer ${this.key}` } : {};
    try {
      const response = await fetch(new URL("sam3/model", this.base), { headers });
      return response.ok ? await response.json() : null;
    } catch {
      return null;
    }
  }

  /**
   * Every instance of a concept (/sam3/concept_segment).
   * @param {string} text e.g. "car"
   * @returns {Promise<Array<{masks: {size: number[], counts: string}, confidence: number}>>}
   */
  async concept(image, text, threshold = 0.5) {
    let call;
    try {
      call = await this.byId(image, "concept_segment", {
        prompts: [{ type: "text", text }],
        format: "rle",
        output_prob_thresh: threshold,
      });
    } catch (error) {
      if (error instanceof ApiError && error.status === 404 && error.code !== "image_not_cached") {
        throw new ApiError(
          404,
          "no_concept_route",
          "this service does not offer concept segmentation (POST /sam3/concept_segment)",
        );
      }
      throw error;
    }
    return call.body.prompt_results[0]?.predictions ?? [];
  }
}
