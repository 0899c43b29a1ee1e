import pytest
import torch

from sam3_core.architecture import TINY
from sam3_core.errors import WeightsError
from sam3_core.model import InteractiveSam3
from sam3_core.sam3_compat import clip_vocabulary
from sam3_core.settings import EngineSettings
from sam3_core.weights import interactive_state_dict, load_checkpoint, load_model, resolve_device
from tests.sam3_reference import ReferenceSam3, ReferenceSam3Image


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A file laid out like sam3.pt ({"model": {"detector.*", "tracker.*"}}), tiny sizes,
    from sam3's complete image model (text encoder and detector included)."""
    path = tmp_path_factory.mktemp("weights") / "sam3.pt"
    torch.save({"model": ReferenceSam3Image(TINY, seed=3).checkpoint()}, path)
    return path


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_without_weights_the_service_refuses_and_says_how_to_get_them():
    with pytest.raises(WeightsError, match=r"SAM3_CHECKPOINT.*hf://facebook/sam3.*RANDOM"):
        load_model(EngineSettings(checkpoint=None, random_weights=None))


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(WeightsError, match="is not a file"):
        load_model(EngineSettings(checkpoint=str(tmp_path / "nope.pt")), checkpoint_arch=TINY)


def test_corrupt_checkpoint_file(tmp_path):
    path = tmp_path / "sam3.pt"
    path.write_bytes(b"definitely not a torch file")
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        load_model(EngineSettings(checkpoint=str(path)), checkpoint_arch=TINY)


def test_checkpoint_file_loads_every_tensor_the_model_has(tiny_checkpoint):
    model = load_model(
        EngineSettings(checkpoint=str(tiny_checkpoint), device="cpu"), checkpoint_arch=TINY
    )
    reference = InteractiveSam3(TINY, concepts_bpe_path=clip_vocabulary())
    load_checkpoint(reference, torch.load(tiny_checkpoint, weights_only=True))
    assert same_weights(model, reference)
    assert not model.training


def test_an_interactive_only_build_loads_the_same_checkpoint_without_its_concept_parts(
    tiny_checkpoint,
):
    settings = EngineSettings(checkpoint=str(tiny_checkpoint), device="cpu", concepts=False)
    model = load_model(settings, checkpoint_arch=TINY)
    assert model.concepts is None
    full = load_model(settings.model_copy(update={"concepts": True}), checkpoint_arch=TINY)
    interactive = {k: v for k, v in full.state_dict().items() if not k.startswith("concepts.")}
    assert interactive.keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in interactive.items())


def test_a_checkpoint_without_the_detector_is_refused_when_concepts_are_on():
    checkpoint = ReferenceSam3(TINY).checkpoint()  # trunk, SAM2 neck and tracker only
    with pytest.raises(WeightsError, match=r"lacks \d+ tensors"):
        load_checkpoint(InteractiveSam3(TINY, concepts_bpe_path=clip_vocabulary()), checkpoint)


def test_the_checkpoints_other_tensors_are_ignored_and_missing_ones_refused():
    checkpoint = ReferenceSam3(TINY).checkpoint()
    state = interactive_state_dict(checkpoint)
    assert not any("sam2_convs" in k or ".convs.3." in k for k in state)
    assert any(k.startswith("image_encoder.convs.2.") for k in state)
    del checkpoint["tracker.sam_mask_decoder.conv_s0.weight"]
    with pytest.raises(WeightsError, match="lacks 1 tensors"):
        load_checkpoint(InteractiveSam3(TINY), checkpoint)


def test_hub_checkpoints_download_sam3_pt(monkeypatch, tiny_checkpoint):
    calls = []

    def fake_download(repo_id: str, filename: str) -> str:
        calls.append((repo_id, filename))
        return str(tiny_checkpoint)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    load_model(EngineSettings(checkpoint="hf://facebook/sam3", device="cpu"), checkpoint_arch=TINY)
    assert calls == [("facebook/sam3", "sam3.pt")]


def test_hub_errors_are_weights_errors(monkeypatch):
    def refuse(repo_id: str, filename: str) -> str:
        raise PermissionError("gated repo: accept the licence first")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", refuse)
    with pytest.raises(WeightsError, match="gated repo"):
        load_model(EngineSettings(checkpoint="hf://facebook/sam3"), checkpoint_arch=TINY)


def test_random_weights_are_seeded_and_logged_loudly(caplog):
    a = load_model(EngineSettings(random_weights="tiny", random_seed=1, device="cpu"))
    b = load_model(EngineSettings(random_weights="tiny", random_seed=1, device="cpu"))
    c = load_model(EngineSettings(random_weights="tiny", random_seed=2, device="cpu"))
    assert same_weights(a, b) and not same_weights(a, c)
    assert "RANDOM weights" in caplog.text


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(WeightsError, match="CUDA is not available"):
            resolve_device("cuda:1")
