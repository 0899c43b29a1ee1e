// Clicks decoded in the browser: the served decoder (GET sam3/decoder.onnx) runs in a Web
// Worker (decode-worker.js) on each image's embedding (POST sam3/embedding), so a click
// costs the service nothing. Where the browser cannot (no WebAssembly or workers, the
// decoder or an embedding fails to load, a decode fails), `reason` says why and the page
// asks the service instead (/sam3/visual_segment).

const MAX_THREADS = 4;

export class LocalDecoder {
  /**
   * @param {import("./api.js").Api} api for its base URL, key and request log
   * @param {{encoding?: string}} [options] the embedding's wire form: float16 or int8
   */
  constructor(api, { encoding = "float16", disabled = null, threads = null } = {}) {
    this.api = api;
    // Half the cores, as onnxruntime-web's own default: a thread more than the machine has
    // free stalls every operator on its slowest thread (measured: 2 threads on a busy 2-core
    // machine decode slower than 1; bench/browser_decode.py compares both).
    const cores = navigator.hardwareConcurrency || 1;
    this.maxThreads = threads ?? Math.min(MAX_THREADS, Math.ceil(cores / 2));
    this.encoding = encoding;
    this.disabled = disabled; // why not to try at all, or null
    this.reason = null; // why the browser cannot decode, or null
    this.threads = 0; // onnxruntime-web's WASM threads, once loaded
    this.simd = null; // whether the browser runs WASM SIMD, once loaded
    this.warmMs = null; // the decodes of zeros run when the decoder loaded (ms), or null
    this.worker = null;
    this.ready = null; // Promise of the decoder loaded in the worker
    this.loaded = new Map(); // imageId -> Promise of its embedding in the worker
    this.bytes = new Map(); // imageId -> bytes of its embedding on the wire
    this.pending = new Map();
    this.nextId = 1;
  }

  /** Start loading the decoder; resolves true when the browser can decode. */
  start() {
    if (this.ready) return this.ready;
    this.ready = this.#load().then(
      () => true,
      (error) => {
        this.reason = error.message;
        this.worker?.terminate();
        this.worker = null;
        if (error.status === 401) this.ready = null; // tried again once a key is entered
        return false;
      },
    );
    return this.ready;
  }

  async #load() {
    if (this.disabled) throw new Error(this.disabled);
    if (typeof WebAssembly !== "object") throw new Error("this browser has no WebAssembly");
    if (typeof Worker !== "function") throw new Error("this browser has no Web Workers");
    this.worker = new Worker(new URL("./decode-worker.js", import.meta.url), { type: "module" });
    this.worker.onmessage = ({ data }) => {
      const waiting = this.pending.get(data.id);
      this.pending.delete(data.id);
      if (data.error) waiting?.reject(new Error(data.error));
      else waiting?.resolve(data);
    };
    this.worker.onerror = (event) => {
      const error = new Error(`the decoder's worker failed: ${event.message ?? "load error"}`);
      for (const waiting of this.pending.values()) waiting.reject(error);
      this.pending.clear();
    };
    const response = await this.#fetch("decoder.onnx", { method: "GET" });
    const onnx = await response.arrayBuffer();
    const answer = await this.#post({ type: "init", onnx, threads: this.maxThreads }, [onnx]);
    this.threads = answer.threads;
    this.simd = answer.simd;
    this.warmMs = answer.warmMs;
  }

  #post(message, transfer = []) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...message, id }, transfer);
    });
  }

  async #fetch(route, init) {
    const headers = { ...(init.headers ?? {}) };
    if (this.api.key) headers.authorization = `Bearer ${this.api.key}`;
    const started = performance.now();
    const response = await fetch(new URL(`sam3/${route}`, this.api.base), { ...init, headers });
    const call = {
      route,
      status: response.status,
      ms: performance.now() - started,
      serviceMs: null,
      cache: response.headers.get("x-sam3-embedding-cache"),
      logits: null,
      replica: response.headers.get("x-sam3-replica"),
      imageId: response.headers.get("x-sam3-image-id"),
      body: null,
    };
    if (!response.ok) {
      let body = null;
      try {
        body = await response.json();
      } catch {
        body = { message: response.statusText };
      }
      this.api.onCall({ ...call, body });
      const error = new Error(`${route}: ${response.status} ${body?.message ?? ""}`.trim());
      error.status = response.status;
      error.code = body?.code;
      throw error;
    }
    this.api.onCall({ ...call, note: init.note });
    return response;
  }

  /**
   * The image's embedding in the worker (fetched once; a second call waits for the first).
   * @param {{id: string|null, dataUrl: string}} image with `id` once the service named it
   * @param {{prefetch?: boolean}} [options] reported in the request log
   * @returns {Promise<string>} the image's id
   */
  load(image, { prefetch = false } = {}) {
    const known = image.id && this.loaded.get(image.id);
    if (known) return known;
    const loading = (async () => {
      if (!(await this.start())) throw new Error(this.reason);
      const body = { encoding: this.encoding };
      if (image.id) body.image_id = image.id;
      else body.image = { type: "base64", value: image.dataUrl };
      let response;
      try {
        response = await this.#fetch("embedding", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body),
          note: prefetch ? "prefetched for the next image" : undefined,
        });
      } catch (error) {
        if (error.code !== "image_not_cached") throw error;
        // Evicted or moved: send the image itself.
        body.image = { type: "base64", value: image.dataUrl };
        response = await this.#fetch("embedding", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body),
          note: "image sent again: its replica no longer held it",
        });
      }
      const id = response.headers.get("x-sam3-image-id");
      const buffer = await response.arrayBuffer();
      this.bytes.set(id, buffer.byteLength);
      await this.#post({ type: "embedding", imageId: id, buffer }, [buffer]);
      this.loaded.set(id, loading);
      return id;
    })();
    if (image.id) this.loaded.set(image.id, loading);
    loading.catch(() => {
      if (image.id && this.loaded.get(image.id) === loading) this.loaded.delete(image.id);
    });
    return loading;
  }

  /** Whether the image's embedding is in the worker already (a click then waits for none). */
  holds(imageId) {
    return this.loaded.has(imageId);
  }

  /**
   * One object's mask from its prompts, decoded here.
   * @param {string} imageId
   * @param {{points: object[], box: object|null}} record image pixels; box as x0/y0/x1/y1
   * @returns {Promise<{rle: {size: number[], counts: string}, score: number, ms: number}>}
   */
  decode(imageId, record, multimask) {
    return this.#post({
      type: "decode",
      imageId,
      points: record.points,
      box: record.box,
      multimask,
    });
  }

  /**
   * `load` then `decode`; an embedding the worker let go of (it keeps a few) is fetched again.
   * @returns {Promise<{rle: object, score: number, ms: number, prior: boolean}>}
   */
  async segment(image, record, multimask) {
    const id = await this.load(image);
    try {
      return await this.decode(id, record, multimask);
    } catch (error) {
      if (!/no embedding/.test(error.message)) throw error;
      this.loaded.delete(id);
      return this.decode(await this.load({ ...image, id }), record, multimask);
    }
  }

  /** Forget an image's embedding (the worker keeps a few). */
  forget(imageId) {
    this.loaded.delete(imageId);
    if (this.worker) this.#post({ type: "drop", imageId }).catch(() => {});
  }
}
