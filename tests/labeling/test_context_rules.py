"""The ConText rule data file: the shipped rules load, bad files name the rule and field, custom rules apply."""

import pytest

from medmodal.labeling import ContextRuleError, ReportLabeler, load_context_rules
from medmodal.labeling.context_rules import RULES_FILE


def test_shipped_rules_load_with_their_reasons():
    shipped = load_context_rules()
    assert RULES_FILE.suffix == ".yaml"
    assert len(shipped.rules) >= 30
    assert all(rule.why for rule in shipped.rules)
    assert "evaluate for" in shipped.removed_default_rules
    # YAML aliases (*be) expand to the shared word list
    is_absent = next(r for r in shipped.rules if r.literal == "is absent")
    assert is_absent.pattern[0] == {"LOWER": {"IN": ["is", "are", "was", "were"]}}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            "literal: x\n    category: NEGATED_EXISTENCE\n    direction: SIDEWAYS\n    why: y",
            "rules.0.direction",
        ),
        ("literal: x\n    category: NEGATED_EXISTENCE\n    direction: FORWARD", "rules.0.why"),
        ("literal: x\n    category: C\n    direction: FORWARD\n    why: y\n    scope: 3", "rules.0.scope"),
    ],
)
def test_bad_rule_names_file_rule_and_field(tmp_path, rule, expected):
    path = tmp_path / "rules.yaml"
    path.write_text(f"rules:\n  - {rule}\n")
    with pytest.raises(ContextRuleError) as err:
        load_context_rules(path)
    assert str(path) in str(err.value) and expected in str(err.value)


def test_not_yaml_is_a_clear_error(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("rules: [unclosed\n")
    with pytest.raises(ContextRuleError, match="not valid YAML"):
        load_context_rules(path)


def test_custom_rule_file_changes_the_labels(tmp_path):
    path = tmp_path / "site_rules.yaml"
    path.write_text(
        "word_lists:\n  gone: &gone [gone, vanished]\n"
        "rules:\n  - literal: is gone\n    category: NEGATED_EXISTENCE\n    direction: BACKWARD\n"
        "    pattern:\n      - {LOWER: is}\n      - {LOWER: {IN: *gone}}\n"
        "    why: \"'The effusion is gone' is a site's wording for resolved\"\n"
    )
    text = "The effusion is gone."
    assert ReportLabeler().label(text)["effusion"] == "positive"
    custom = ReportLabeler(extra_context_rules=load_context_rules(path).rules)
    assert custom.label(text)["effusion"] == "negative"
