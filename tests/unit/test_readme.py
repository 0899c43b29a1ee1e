"""The docs stay true: every setting is in README.md's table and every limit in
docs/operations.md; README's two commands are where CI and users look for them."""

import re
import subprocess
from pathlib import Path

from deployments.settings import IngressSettings, SegmenterSettings
from sam3_core.settings import EngineSettings
from tests.conftest import encode_image, random_pixels

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()
OPERATIONS = (ROOT / "docs" / "operations.md").read_text()
LIMITS = (
    "max_request_bytes",
    "max_image_bytes",
    "max_image_pixels",
    "max_prompts",
    "max_points_per_prompt",
    "max_image_id_length",
    "embedding_cache_bytes",
    "max_embedding_cache_size",
    "embedding_dtype",
    "max_logits_cache_size",
    "logits_cache_bytes",
    "url_timeout_seconds",
    "url_max_redirects",
    "retry_after_seconds",
    "handoff_timeout_seconds",
)


# Every setting of the service: the engine's and the segmenter replica's own (each segmenter
# replica), and the ingress's.
SETTINGS = {
    **EngineSettings.model_fields,
    **SegmenterSettings.model_fields,
    **IngressSettings.model_fields,
}


def env_name(field: str) -> str:
    alias = SETTINGS[field].validation_alias
    if alias is not None:
        return alias.choices[0]
    return f"SAM3_{field.upper()}"


def test_every_setting_is_documented():
    missing = [env_name(f) for f in SETTINGS if f"`{env_name(f)}`" not in README]
    assert not missing, f"README.md's configuration table lacks {missing}"


def test_the_two_commands():
    for marker, command in (
        ("run-command", "serve run serve_config.yaml"),
        ("test-command", "pytest"),
    ):
        block = re.search(rf"<!-- {marker} -->\n```bash\n(.+?)\n```", README, re.S)
        assert block and command in block.group(1)


def test_the_fast_tier_leaves_out_ray_and_the_browser():
    block = re.search(r"<!-- fast-test-command -->\n```bash\n(.+?)\n```", README, re.S)
    assert block and '-m "not ray and not browser and not slow"' in block.group(1)
    # Every test that starts Ray, a browser or another service lives in tests/integration,
    # and every module there is marked out of the fast tier.
    for module in (ROOT / "tests" / "integration").glob("test_*.py"):
        text = module.read_text()
        marks = ("ray", "browser", "slow")
        assert any(f"pytest.mark.{mark}" in text for mark in marks), module.name
        if "from bench.browser import" in text or "def browser(" in text or "Annotator" in text:
            assert "pytest.mark.browser" in text, f"{module.name} drives Chromium: mark it browser"


def test_every_limit_is_in_the_operations_guide():
    missing = [env_name(f) for f in LIMITS if f"`{env_name(f)}`" not in OPERATIONS]
    assert not missing, f"docs/operations.md's limits table lacks {missing}"
    assert set(LIMITS) <= set(SETTINGS)


def test_the_engine_example_runs(tmp_path, monkeypatch):
    """README's engine example, run as written but on the tiny random model."""
    (code,) = re.findall(r"Or use the engine directly.*?```python\n(.+?)```", README, re.S)
    assert 'EngineSettings(checkpoint="/models/sam3.pt")' in code
    code = code.replace(
        'EngineSettings(checkpoint="/models/sam3.pt")',
        'EngineSettings(random_weights="tiny", device="cpu", max_hole_area=0)',
    )
    (tmp_path / "photo.jpg").write_bytes(encode_image(random_pixels(0, 480, 640), "JPEG"))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["result"].decoded.masks.shape == (1, 480, 640)


def test_the_layout_table_names_every_module():
    rows = {
        folder: next(line for line in README.splitlines() if line.startswith(f"| `{folder}/` |"))
        for folder in ("sam3_core", "deployments")
    }
    missing = [
        f"{folder}/{path.name}"
        for folder, row in rows.items()
        for path in sorted((ROOT / folder).glob("*.py"))
        if path.name not in ("__init__.py",) and f"`{path.name}`" not in row
    ]
    assert not missing, f"README.md's Layout table lacks {missing}"


def block(marker: str) -> str:
    found = re.search(rf"<!-- {marker} -->\n```bash\n(.+?)\n```", README, re.S)
    assert found, f"README.md has no {marker} block"
    return found.group(1)


def test_the_cpu_try_out_comes_first_and_installs_cpu_torch():
    run = block("run-command")
    cpu_torch = run.index("download.pytorch.org/whl/cpu")
    assert cpu_torch < run.index("pip install -e .") < run.index("serve run")
    assert README.index("<!-- run-command -->") < README.index("On a GPU machine, install")


def test_the_readiness_step_asks_the_readiness_route_and_says_how_to_stop(api):
    """The README's readiness command is a GET of a route the service has, answering what
    the README shows once ready; the section says Ctrl-C stops the service."""
    (url,) = re.findall(r"curl -s localhost:8000(/\S+)", block("readiness-command"))
    answer = api.get(url)
    assert answer.status_code == 200
    assert f"# {answer.text}" in block("readiness-command")
    section = README[README.index("<!-- readiness-command -->") :]
    assert "Ctrl-C" in section[: section.index("## Use it from a browser")]


def test_server_timing_lists_every_stage():
    from deployments.operations import STAGES

    (listed,) = re.findall(
        r"`Server-Timing` with the request's stages in ms \((.+?)\)", README, re.S
    )
    assert [stage for stage in STAGES if f"`{stage}`" not in listed] == []


def test_kubernetes_call_it_names_every_route(api):
    kubernetes = (ROOT / "docs" / "kubernetes.md").read_text()
    section = kubernetes[kubernetes.index("## Call it") :].split("\n## ")[0]
    paths = [p for p in api.get("/openapi.json").json()["paths"]]
    assert [p for p in paths if f"`{p.split('{')[0]}" not in section and p not in section] == []


def test_no_file_cites_the_design_spec():
    """The specification the project was built from is not in the repository: docs and code
    say the thing itself instead of citing its sections."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    citing = [
        path
        for path in tracked
        if path.endswith((".py", ".md", ".js", ".html", ".yaml", ".in", ".css"))
        and "SPEC " + "§" in (ROOT / path).read_text(errors="ignore")
    ]
    assert not citing, citing
