"""Click-to-mask in Chromium: the page's local decoder (onnxruntime-web in a Web Worker)
against the service's decoder (`/sam3/visual_segment`), side by side in one run, with the
bytes an image costs on the wire and the requests a click sends.

    python -m bench.browser_decode                      # narrow and full size
    python -m bench.browser_decode --arch narrow --clicks 10

Random weights (the sizes are what matter here). The API is served in-process (uvicorn on
127.0.0.1, one engine, no Ray: the server path's figure is its floor, without the Ray
proxy's and handle's milliseconds). Hole filling is off on both paths: on random weights'
noise masks scikit-image's labelling dominates a server decode (a cost real masks do not
have), and the page's own hole filling is a few milliseconds at 288x288. The page's clicks
are timed again on another number of WASM threads, the worker's stages of each click are
kept (medians), onnxruntime-web's profiler says where its `run` goes by operator type (one
thread), and the machine's load average is kept beside them. Writes
bench/results/browser_decode.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
import uvicorn

from bench.browser import chromium, chromium_path
from bench.samples import encode_image, random_pixels
from deployments.api import create_api
from deployments.owners import LocalOwners
from deployments.settings import IngressSettings
from sam3_core.engine import Segmenter
from sam3_core.onnx_decoder import export_decoder, rearranging_pays
from sam3_core.settings import EngineSettings
from sam3_core.weights import load_model

RESULTS = Path(__file__).parent / "results" / "browser_decode.json"
HEIGHT, WIDTH = 768, 1024

LOCAL = """async ([dataUrl, points, threads]) => {
  const { LocalDecoder } = await import("./page/local-decoder.js");
  const { decodeRle } = await import("./page/rle.js");
  const api = { base: document.baseURI, key: "", onCall: () => {} };
  const local = new LocalDecoder(api, { threads });
  let started = performance.now();
  if (!(await local.start())) throw new Error(local.reason);
  const startMs = performance.now() - started;
  started = performance.now();
  const id = await local.load({ id: null, dataUrl });
  const loadMs = performance.now() - started;
  await local.decode(id, { points: [points[0]], box: null }, true);  // warm-up
  const ms = [];
  const workerMs = [];
  const stages = {};
  for (const p of points) {
    const t = performance.now();
    const answer = await local.decode(id, { points: [p], box: null }, true);
    ms.push(performance.now() - t);
    workerMs.push(answer.ms);
    const drawn = performance.now();
    decodeRle(answer.rle);  // the page's first step to a canvas (view.js), on its own thread
    (stages.page_rle_decode ??= []).push(performance.now() - drawn);
    for (const [stage, value] of Object.entries(answer.stages)) {
      (stages[stage] ??= []).push(value);
    }
  }
  local.worker.terminate();
  const { simd, warmMs } = local;
  return { id, ms, workerMs, stages, startMs, loadMs, threads: local.threads, simd, warmMs };
}"""

SERVER = """async ([id, points]) => {
  const ms = [];
  for (const p of [points[0], ...points]) {
    const t = performance.now();
    const response = await fetch("sam3/visual_segment", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        image_id: id, prompts: [{ points: [p] }], format: "rle", multimask_output: true,
      }),
    });
    await response.json();
    ms.push(performance.now() - t);
  }
  return ms.slice(1);  // the first was the warm-up
}"""


# onnxruntime-web's own profiler over the served graph, on one WASM thread in the page's
# thread (its events come out on the console): zeros for the embedding, one click.
PROFILE = """async ([runs]) => {
  const ort = await import("./page/vendor/ort.wasm.min.mjs");
  ort.env.wasm.wasmPaths = new URL("./page/vendor/", document.baseURI).href;
  ort.env.wasm.numThreads = 1;
  const onnx = await (await fetch("sam3/decoder.onnx")).arrayBuffer();
  const session = await ort.InferenceSession.create(new Uint8Array(onnx), {
    executionProviders: ["wasm"], graphOptimizationLevel: "all", enableProfiling: true,
  });
  const shapes = new Map(session.inputMetadata.map((m) => [m.name, m.shape]));
  const tensor = (shape, values) =>
    new ort.Tensor("float32", values ?? new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
  const side = shapes.get("high_res_feats_0")[3];
  const feeds = {
    point_coords: tensor([1, 2, 2], new Float32Array([side / 2, side / 2, 0, 0])),
    point_labels: tensor([1, 2], new Float32Array([1, -1])),
    mask_input: tensor([1, 1, 4, 4]),
    has_mask_input: tensor([1]),
    orig_im_size: tensor([2], new Float32Array([side, side])),
  };
  for (const name of ["image_embed", "high_res_feats_0", "high_res_feats_1"]) {
    feeds[name] = tensor(shapes.get(name));
  }
  for (let i = 0; i < runs; i += 1) await session.run(feeds);
  session.endProfiling();
}"""
PROFILE_RUNS, PROFILE_SKIPPED = 12, 2  # the first runs compile and allocate: not counted


@contextmanager
def serving(engine: Segmenter) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_api(LocalOwners(engine), IngressSettings())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(values),
        "p50_ms": statistics.median(values),
        "p90_ms": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
    }


def local_figures(answer: dict) -> dict:
    """The page's figures: click to mask, the worker's share, and the worker's stages."""
    return {
        "wasm_threads": answer["threads"],
        "wasm_simd": answer["simd"],
        "click": summary(answer["ms"]),
        "worker": summary(answer["workerMs"]),
        # Stage medians: tensors fed, onnxruntime-web's run, proposal chosen (and kept for
        # refinement), holes filled, upsampled to the image and RLE-encoded; then, in the
        # page (not in the click's time), the RLE decoded to an H*W mask as view.js does.
        "stages_p50_ms": {k: statistics.median(v) for k, v in answer["stages"].items()},
        # Posting the prompt to the worker and its answer back.
        "messages_p50_ms": statistics.median(answer["ms"]) - statistics.median(answer["workerMs"]),
    }


def wasm_profile(page) -> dict:
    """Where onnxruntime-web's `run` spends its time, by operator type: each type's share
    of the kernels' time over the profiled runs (the first `PROFILE_SKIPPED` left out),
    and the kernels' time per run."""
    lines: list[str] = []
    page.on("console", lambda message: lines.extend(message.text.splitlines()))
    page.evaluate(PROFILE, [PROFILE_RUNS])
    # Console messages reach Python after the call that logged them returns.
    deadline = time.monotonic() + 30
    while sum('"model_run"' in line for line in lines) < PROFILE_RUNS:
        assert time.monotonic() < deadline, "onnxruntime-web's profile did not arrive"
        page.wait_for_timeout(100)
    events = []
    for line in lines:
        line = line.strip().rstrip(",")
        if line.startswith("{") and '"cat"' in line:
            events.append(json.loads(line))
    runs = sorted(e["ts"] for e in events if e["name"] == "model_run")
    counted_from = runs[PROFILE_SKIPPED]
    by_op: dict[str, float] = {}
    for event in events:
        kernel = event["cat"] == "Node" and event["name"].endswith("_kernel_time")
        if kernel and event["ts"] >= counted_from:
            op = event["args"]["op_name"]
            by_op[op] = by_op.get(op, 0.0) + event["dur"]
    total = sum(by_op.values())
    return {
        "threads": 1,
        "runs": len(runs) - PROFILE_SKIPPED,
        "kernels_ms_per_run": total / 1000 / (len(runs) - PROFILE_SKIPPED),
        "op_share": {
            op: round(us / total, 4) for op, us in sorted(by_op.items(), key=lambda kv: -kv[1])
        },
    }


def measure(arch: str, clicks: int, browser, threads: int | None = None) -> dict:
    settings = EngineSettings(random_weights=arch, max_hole_area=0, concepts=False, device="cpu")
    model = load_model(settings)
    engine = Segmenter(model, settings)
    # Where the served graph is rearranged (`rearranging_pays`), the same clicks again on the
    # graph sam3's modules export as they are, fed to the page in place of the served one.
    plain = export_decoder(model, rearrange=False) if rearranging_pays(model) else None
    png = encode_image(random_pixels(5, HEIGHT, WIDTH))
    data_url = "data:image/png;base64," + base64.b64encode(png).decode()
    points = [
        {"x": 40 + (i * 97) % (WIDTH - 80), "y": 30 + (i * 61) % (HEIGHT - 60), "positive": True}
        for i in range(clicks)
    ]
    load_before = os.getloadavg()[0]
    with serving(engine) as url:
        started = time.perf_counter()
        onnx = requests.get(url + "/sam3/decoder.onnx", timeout=600).content
        export_s = time.perf_counter() - started
        context = browser.new_context()
        page = context.new_page()
        sent: list[str] = []
        page.on("request", lambda r: sent.append(r.url) if "/sam3/" in r.url else None)
        page.goto(url + "/")
        isolated = page.evaluate("crossOriginIsolated")
        local = page.evaluate(LOCAL, [data_url, points, threads])
        local_requests = len(sent)
        server_ms = page.evaluate(SERVER, [local["id"], points])
        server_requests = len(sent) - local_requests
        # The same clicks on another number of WASM threads (1, or 2 where the page chose 1):
        # what threads buy or cost on this machine.
        other = page.evaluate(LOCAL, [data_url, points, 2 if local["threads"] == 1 else 1])
        profile = wasm_profile(page)
        context.close()
        plain_figures = {}
        if plain is not None:
            context = browser.new_context()
            page = context.new_page()
            page.route("**/sam3/decoder.onnx", lambda route: route.fulfill(status=200, body=plain))
            page.goto(url + "/")
            for role, count in (("threads", local["threads"]), ("other", other["threads"])):
                plain_figures[role] = local_figures(page.evaluate(LOCAL, [data_url, points, count]))
            context.close()
        sizes = {
            encoding: len(
                requests.post(
                    url + "/sam3/embedding",
                    json={"image_id": local["id"], "encoding": encoding},
                    timeout=600,
                ).content
            )
            for encoding in ("float32", "float16", "int8")
        }
    return {
        "arch": arch,
        "image": [HEIGHT, WIDTH],
        # One-minute load average of this machine when the arch's run began and ended.
        "load_average": [load_before, os.getloadavg()[0]],
        "cross_origin_isolated": isolated,
        "wasm_threads": local["threads"],
        "wasm_simd": local["simd"],
        "decoder_onnx_bytes": len(onnx),
        "decoder_export_seconds": export_s,
        "decoder_start_ms": local["startMs"],
        # Of which the warm-up decodes of zeros (V8 compiles hot WebAssembly again).
        "decoder_warm_ms": local["warmMs"],
        "embedding_load_ms": local["loadMs"],
        "embedding_bytes": sizes,
        "local": summary(local["ms"]),
        "local_worker": summary(local["workerMs"]),
        "local_detail": local_figures(local),
        "local_other_threads": local_figures(other),
        "wasm_profile": profile,
        "server": summary(server_ms),
        # The clicks on the graph sam3's modules export unrearranged, on the page's number
        # of WASM threads ("threads") and on the other one ("other").
        "local_unrearranged_graph": plain_figures,
        "decoder_unrearranged_onnx_bytes": len(plain) if plain is not None else None,
        # Requests to the service while the clicks were decoded locally (decoder and
        # embedding are fetched before), and per click through the service.
        "requests_per_click_local": (local_requests - 2) / (clicks + 1),
        "requests_per_click_server": server_requests / (clicks + 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="+", default=["narrow", "full"])
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument(
        "--threads", type=int, default=None, help="WASM threads (default: the page's choice)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    path = chromium_path()
    if path is None:
        raise SystemExit("no chromium on the PATH (apt-get install chromium)")
    results = {"cpus": os.cpu_count(), "clicks": args.clicks}
    if args.out.exists():
        results = {**json.loads(args.out.read_text()), **results}
    with chromium(path) as browser:
        for arch in args.arch:
            results[arch] = measure(arch, args.clicks, browser, args.threads)
            print(json.dumps(results[arch], indent=1))
            args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
