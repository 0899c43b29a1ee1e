"""The page's onnxruntime-web files (`deployments/web/vendor/`) are the pinned npm package's,
byte for byte: the tarball `npm pack` fetches (or finds in npm's cache) must carry the
integrity that `package-lock.json` pins, and hold the same files."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[2] / "deployments" / "web"
VENDORED = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")


def test_package_json_pins_one_version():
    package = json.loads((WEB / "package.json").read_text())
    lock = json.loads((WEB / "package-lock.json").read_text())
    version = package["dependencies"]["onnxruntime-web"]
    assert version[0].isdigit(), "pinned: an exact version, no range"
    assert lock["packages"]["node_modules/onnxruntime-web"]["version"] == version
    assert sorted(p.name for p in (WEB / "vendor").iterdir()) == sorted(VENDORED)


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_vendored_files_are_the_pinned_packages(tmp_path):
    lock = json.loads((WEB / "package-lock.json").read_text())
    entry = lock["packages"]["node_modules/onnxruntime-web"]
    packed = subprocess.run(
        ["npm", "pack", f"onnxruntime-web@{entry['version']}", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    tarball = tmp_path / json.loads(packed.stdout)[0]["filename"]
    algorithm, expected = entry["integrity"].split("-", 1)
    digest = hashlib.new(algorithm, tarball.read_bytes()).digest()
    assert base64.b64encode(digest).decode() == expected
    with tarfile.open(tarball) as archive:
        for name in VENDORED:
            member = archive.extractfile(f"package/dist/{name}")
            assert member is not None and member.read() == (WEB / "vendor" / name).read_bytes()
