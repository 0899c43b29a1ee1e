// A video's frames as pictures to draw: decoded by the browser from the file the service
// decodes too (a <video> element seeked to each frame's middle), or the pictures themselves
// when the video was opened as its frames.

/** Resolve on the element's next `type` event, reject on its `error`. */
function once(element, type) {
  return new Promise((resolve, reject) => {
    const done = () => {
      element.removeEventListener("error", failed);
      resolve();
    };
    const failed = () => {
      element.removeEventListener(type, done);
      reject(new Error(`this browser cannot play the video (${element.error?.message ?? "error"})`));
    };
    element.addEventListener(type, done, { once: true });
    element.addEventListener("error", failed, { once: true });
  });
}

/** Resolve after `ms` milliseconds. */
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** How long a seeked frame may take to become drawable before the page gives up on the file. */
const FRAME_WAIT_MS = 10_000;

/**
 * The frame the element has seeked to, as a bitmap. Chromium may fire `seeked` before the
 * decoder has handed over that frame (readyState still HAVE_METADATA when the machine is
 * busy), and createImageBitmap then throws InvalidStateError ("the image source is not
 * usable"); so wait, bounded, until the element has its current frame.
 * @param {HTMLVideoElement} video
 */
async function seekedFrame(video) {
  const deadline = performance.now() + FRAME_WAIT_MS;
  for (;;) {
    if (video.readyState >= HTMLMediaElement.HAVE_CURRENT_DATA) {
      try {
        return await createImageBitmap(video);
      } catch (error) {
        if (error.name !== "InvalidStateError" || performance.now() > deadline) throw error;
      }
    } else if (performance.now() > deadline) {
      throw new Error("this browser did not decode the video's frame in time");
    }
    await pause(25);
  }
}

/**
 * `count` frames of a video file, in order. The service counted them (its decoder reads every
 * frame); the browser seeks to the middle of each of `count` equal slices of the duration,
 * which is frame i for a constant frame rate.
 * @param {Blob} file
 * @param {number} count
 * @param {(done: number) => void} onFrame
 * @returns {Promise<{bitmaps: ImageBitmap[], fps: number}>}
 */
export async function framesOfVideo(file, count, onFrame = () => {}) {
  const video = document.createElement("video");
  video.muted = true;
  video.preload = "auto";
  video.src = URL.createObjectURL(file);
  try {
    await once(video, "loadeddata");
    const duration = Number.isFinite(video.duration) ? video.duration : count / 25;
    const fps = count / duration;
    const bitmaps = [];
    for (let i = 0; i < count; i += 1) {
      video.currentTime = Math.min((i + 0.5) / fps, duration);
      await once(video, "seeked");
      bitmaps.push(await seekedFrame(video));
      onFrame(i + 1);
    }
    return { bitmaps, fps };
  } finally {
    URL.revokeObjectURL(video.src);
  }
}

/**
 * Pictures opened as a video's frames, decoded.
 * @param {Blob[]} files in frame order
 * @returns {Promise<{bitmaps: ImageBitmap[], fps: number}>}
 */
export async function framesOfPictures(files) {
  const bitmaps = await Promise.all(files.map((file) => createImageBitmap(file)));
  return { bitmaps, fps: 10 };
}
