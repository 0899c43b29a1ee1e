// Nothing lost: the dataset (its image files) and each image's objects, kept in this
// browser's IndexedDB as they change, and read back after a reload or a crash.

const DB_NAME = "sam3-serve";
const VERSION = 1;

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

let opened = null;
function database() {
  opened ??= new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, VERSION);
    req.onupgradeneeded = () => {
      const db = req.result;
      db.createObjectStore("files"); // position -> {name, blob}
      db.createObjectStore("annotations"); // position -> {objects, meta, nextId}
      db.createObjectStore("state"); // "current" -> position
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
  return opened;
}

async function transaction(stores, mode, work) {
  const db = await database();
  const tx = db.transaction(stores, mode);
  const done = new Promise((resolve, reject) => {
    tx.oncomplete = resolve;
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
  const result = await work(tx);
  await done;
  return result;
}

/** A new dataset: its files, in order, replacing whatever was kept. */
export function saveFiles(files) {
  return transaction(["files", "annotations", "state"], "readwrite", (tx) => {
    for (const name of ["files", "annotations", "state"]) tx.objectStore(name).clear();
    files.forEach((file, position) => {
      tx.objectStore("files").put({ name: file.name, blob: file }, position);
    });
  });
}

/** One image's objects (plain data: prompts, RLE masks, labels). */
export function saveAnnotations(position, annotations) {
  return transaction(["annotations"], "readwrite", (tx) => {
    tx.objectStore("annotations").put(annotations, position);
  });
}

export function saveCurrent(position) {
  return transaction(["state"], "readwrite", (tx) => {
    tx.objectStore("state").put(position, "current");
  });
}

/**
 * What was kept: the files with their objects, and the image that was open.
 * @returns {Promise<{files: Array<{name: string, blob: Blob, annotations: object|null}>, current: number}>}
 */
export function loadDataset() {
  return transaction(["files", "annotations", "state"], "readonly", async (tx) => {
    const files = await request(tx.objectStore("files").getAll());
    const keys = await request(tx.objectStore("files").getAllKeys());
    const annotations = await Promise.all(
      keys.map((key) => request(tx.objectStore("annotations").get(key))),
    );
    const current = (await request(tx.objectStore("state").get("current"))) ?? 0;
    return {
      files: files.map((file, i) => ({ ...file, annotations: annotations[i] ?? null })),
      current,
    };
  });
}

/** Forget the dataset and every object in it. */
export function clearDataset() {
  return transaction(["files", "annotations", "state"], "readwrite", (tx) => {
    for (const name of ["files", "annotations", "state"]) tx.objectStore(name).clear();
  });
}
