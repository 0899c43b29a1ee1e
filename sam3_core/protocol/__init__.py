"""The wire formats of the API, apart from the model: Roboflow's JSON bodies (`bodies`), the
client's image input (`image_input`, with SSRF-guarded URL fetching in `url_fetch`) and the
mask codecs (`masks`: polygons, COCO RLE). Nothing here imports torch."""
