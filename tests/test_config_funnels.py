"""The ``funnels`` setting: validated against the action allow-list and its bounds, one line per problem."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from exporter.config import Config, ConfigError, load


def test_a_valid_funnel_is_kept_in_order():
    config = Config(funnels={"onboarding": ["login", "upload", "view", "export"]})
    assert config.funnels == {"onboarding": ["login", "upload", "view", "export"]}
    assert (config.workflow_session_timeout, config.workflow_max_sessions) == (1800, 100_000)


def test_steps_may_come_from_a_replaced_action_allow_list():
    config = Config(allow_lists={"action": ["sign_in", "scan"]}, funnels={"scan_flow": ["sign_in", "scan"]})
    assert config.funnels["scan_flow"] == ["sign_in", "scan"]


@pytest.mark.parametrize(("funnels", "message"), [
    ({"short": ["login"]}, "must have 2..10 steps, got 1"),
    ({"long": ["view"] * 11}, "must have 2..10 steps, got 11"),
    ({"bad": ["login", "teleport"]}, "'teleport' is not an allowed action"),
    ({"Bad-Name": ["login", "view"]}, "lowercase letters, digits and _"),
    ({f"f{n}": ["login", "view"] for n in range(21)}, "at most 20 funnels, got 21"),
])
def test_a_bad_funnel_is_one_line_naming_the_setting(tmp_path, funnels, message):
    path = tmp_path / "clary.yml"
    path.write_text(yaml.safe_dump({"funnels": funnels}))
    with pytest.raises(ConfigError) as caught:
        load({"config": str(path)})
    text = str(caught.value)
    assert "\n" not in text and text.startswith(f"config file {path}: funnels: ") and message in text


@pytest.mark.parametrize(("name", "good", "bad"), [("workflow_session_timeout", 60, 59),
                                                 ("workflow_max_sessions", 1, 0)])
def test_workflow_bounds_are_checked(name, good, bad):
    assert getattr(Config(**{name: good}), name) == good
    with pytest.raises(ValidationError, match="greater than or equal to"):
        Config(**{name: bad})
