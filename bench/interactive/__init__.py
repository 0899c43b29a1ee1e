"""Interactive annotation workload against the real service, request routers side by side.

    python -m bench.interactive --quick     # ~5 min on 2 cores (CI runs it: 6.5 to 8 min there)
    python -m bench.interactive             # R = 3 and 4, 12 annotators x 6 clicks (~25 min)

U simulated annotators work through images as an annotation tool does: embed, then k clicks
where each click adds a point to the previous ones and reuses the logits cache; some clicks
send only the `image_id`, some resend the image (as `inference-sdk` does); a 404
`image_not_cached` makes the tool resend the image. Think time separates clicks; a share of
annotators come back to an earlier image. Everything is seeded.

The same workload runs on local Ray, over HTTP through Ray's proxy, with R segmenter
replicas under three request routers, only the router differing: consistent hashing on
`image_id` (ours), Ray Serve's default power-of-two-choices, and round robin. A last run of
ours adds a replica mid-run and later removes one. Weights are random ("narrow": SAM3's
1008 px input with narrow widths, whose embed:decode cost ratio on this CPU is close to
SAM3's on a GPU; the ratio is measured and printed).

Writes bench/results/interactive[-quick].json and three PNG plots.

Modules: `workload` (the annotators and what they record), `metrics` (the replicas'
counters and cache bytes, from Prometheus), `scenario` (deploying one app per router, the
runs and the scale events), `stats` (summaries and the moved-image analysis), `cost` (the
model's embed:decode ratio), `plots`, and `__main__` (the command line and the report).
"""
