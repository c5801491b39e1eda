import pytest

from medmodal.config import ConfigError, config_from_dict
from medmodal.models import available, create, create_model, register
from medmodal.models.registry import check_part_names

EXPECTED = {
    "image_encoder": {"small_cnn", "resnet18", "resnet50", "densenet121", "efficientnet_b0"},
    "text_encoder": {"bilstm_attention", "transformer"},
    "fusion": {"concat", "late", "gated", "bilinear", "cross_attention"},
    "decoder": {"lstm", "transformer"},
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_builtin_parts_are_registered(kind):
    assert EXPECTED[kind] <= set(available(kind))


def test_unknown_name_lists_available_names():
    with pytest.raises(ValueError) as err:
        create("fusion", "gatd", image_dim=4, text_dim=4, grid_dim=4, seq_dim=4, out_dim=4, num_labels=2)
    message = str(err.value)
    assert "unknown fusion 'gatd'" in message
    assert "available: bilinear, concat, cross_attention, gated, late" in message


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="unknown part kind 'head'"):
        create("head", "x")


def test_registering_a_taken_name_fails():
    with pytest.raises(ValueError, match="registered twice"):
        register("fusion", "concat")(object)


def test_unknown_part_names_fail_with_the_field_and_the_list():
    config = config_from_dict(
        {"model": {"decoder": {"name": "gru"}}}
    )  # the config reads it; the models check it
    with pytest.raises(
        ConfigError, match=r"model\.decoder\.name: unknown decoder 'gru'; available: lstm, transformer"
    ):
        check_part_names(config.model)
    with pytest.raises(ConfigError, match="unknown decoder 'gru'"):
        create_model(config.model, vocab_size=10, num_labels=2, pad_id=0, bos_id=1, eos_id=2)
