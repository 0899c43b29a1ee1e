"""README.md stays true: every setting is in its table, its two commands are where CI and
users look for them."""

import re
from pathlib import Path

from deployments.settings import ServiceSettings

README = (Path(__file__).parents[2] / "README.md").read_text()


def env_name(field: str) -> str:
    alias = ServiceSettings.model_fields[field].validation_alias
    if alias is not None:
        return alias.choices[0]
    return f"SAM3_{field.upper()}"


def test_every_setting_is_documented():
    missing = [
        env_name(f) for f in ServiceSettings.model_fields if f"`{env_name(f)}`" not in README
    ]
    assert not missing, f"README.md's configuration table lacks {missing}"


def test_the_two_commands():
    for marker, command in (
        ("run-command", "serve run serve_config.yaml"),
        ("test-command", "pytest"),
    ):
        block = re.search(rf"<!-- {marker} -->\n```bash\n(.+?)\n```", README, re.S)
        assert block and command in block.group(1)
