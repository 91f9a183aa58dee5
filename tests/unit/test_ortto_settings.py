"""ORTTO_* settings: read from their JSON text, and each mistake one line naming the variable."""

from __future__ import annotations

import pytest

from worker.backends.ortto import OrttoConfig
from worker.settings import Settings, SettingsInvalid, configuration_errors


def test_the_json_settings_are_read_into_the_mapping_config() -> None:
    settings = Settings.model_validate(
        {
            "ortto_merge_by": '["str::email", "str::ei"]',
            "ortto_person_fields": '{"plan": "str:cm:subscription-plan"}',
            "ortto_activities": '{"Order Completed": "act:cm:purchase"}',
            "ortto_activity_attributes": '{"Order Completed": ["order_id", "total"]}',
            "ortto_async_merge": "false",
        }
    )
    assert OrttoConfig.from_settings(settings) == OrttoConfig(
        merge_by=("str::email", "str::ei"),
        person_fields={"plan": "str:cm:subscription-plan"},
        activities={"Order Completed": "act:cm:purchase"},
        activity_attributes={"Order Completed": ("order_id", "total")},
        async_merge=False,
    )
    assert OrttoConfig.from_settings(Settings()) == OrttoConfig()


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("ortto_region", "mars", "expected us, au or eu"),
        ("ortto_rate_limit", "0", "requests per second above 0"),
        ("ortto_merge_by", '["str::phone"]', '"str::ei" and/or "str::email"'),
        ("ortto_merge_by", "[]", '"str::ei" and/or "str::email"'),
        ("ortto_merge_by", '["str::ei", "str::ei"]', '"str::ei" and/or "str::email"'),
        ("ortto_person_fields", '{"plan": "plan"}', "<type>:<namespace>:<name>"),
        ("ortto_person_fields", "{plan: x}", "trait name to Ortto field id"),
        ("ortto_activities", '{"Signed Up": "signed-up"}', "an activity id starts with act:"),
        ("ortto_activity_attributes", '{"E": ["a"], "F": "b"}', "at most 15 property names"),
        (
            "ortto_activity_attributes",
            '{"E": [' + ", ".join(f'"p{n}"' for n in range(16)) + "]}",
            "at most 15 property names",
        ),
    ],
)
def test_a_wrong_ortto_setting_is_one_line_naming_it(variable: str, value: str, says: str) -> None:
    with pytest.raises(SettingsInvalid) as error:
        Settings.model_validate({variable: value})
    (line,) = configuration_errors(error.value)
    assert line.startswith(f"configuration error: {variable.upper()}: ")
    assert says in line
