import pytest
from pydantic import ValidationError

from deployments.settings import IngressSettings
from sam3_core.settings import EngineSettings


def test_defaults_follow_the_spec(monkeypatch):
    for name in ("SAM3_MAX_EMBEDDING_CACHE_SIZE", "DISABLE_SAM3_LOGITS_CACHE", "SAM3_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    settings = EngineSettings()
    assert settings.max_embedding_cache_size == 100
    assert settings.max_logits_cache_size == 1000
    assert settings.disable_logits_cache is False
    assert settings.device == "auto"
    assert settings.max_image_bytes == 25 * 2**20
    assert settings.max_image_pixels == 64 * 2**20
    assert IngressSettings().allow_url_input is False


def test_environment_names(monkeypatch):
    monkeypatch.setenv("SAM3_MAX_EMBEDDING_CACHE_SIZE", "7")
    monkeypatch.setenv("SAM3_MAX_LOGITS_CACHE_SIZE", "9")
    monkeypatch.setenv("DISABLE_SAM3_LOGITS_CACHE", "true")
    monkeypatch.setenv("SAM3_EMBEDDING_CACHE_BYTES", "1048576")
    monkeypatch.setenv("SAM3_RANDOM_WEIGHTS", "tiny")
    monkeypatch.setenv("SAM3_URL_ALLOWED_HOSTS", "images.example.com, *.cdn.example.org")
    monkeypatch.setenv("SAM3_MAX_PROMPTS", "5")
    settings = EngineSettings()
    assert settings.max_embedding_cache_size == 7
    assert settings.max_logits_cache_size == 9
    assert settings.disable_logits_cache is True
    assert settings.embedding_cache_bytes == 2**20
    assert settings.random_weights == "tiny"
    ingress = IngressSettings()
    assert ingress.url_allowed_hosts == ("images.example.com", "*.cdn.example.org")
    # The request limits are one set of fields, read alike by the engine and the ingress.
    assert settings.max_prompts == ingress.max_prompts == 5


def test_empty_values_mean_unset(monkeypatch):
    monkeypatch.setenv("SAM3_CHECKPOINT", "")
    monkeypatch.setenv("SAM3_RANDOM_WEIGHTS", "")
    settings = EngineSettings()
    assert settings.checkpoint is None and settings.random_weights is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SAM3_RANDOM_WEIGHTS", "huge"),
        ("SAM3_MAX_EMBEDDING_CACHE_SIZE", "0"),
        ("SAM3_EMBEDDING_DTYPE", "int8"),
    ],
)
def test_bad_values_fail_at_start(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        EngineSettings()


def test_the_ingress_carries_no_model_settings():
    model_fields = {"checkpoint", "device", "random_weights", "embedding_cache_bytes"}
    assert not model_fields & set(IngressSettings.model_fields)
