import pytest
import torch

from robquant.errors import ConfigError, UnknownNameError
from robquant.models import count_macs, count_parameters, create_model, list_models


def test_resnet20_size_matches_he_et_al():
    model = create_model("resnet20", num_classes=10, in_channels=3)
    assert count_parameters(model) == 269_722
    assert round(count_macs(model, (3, 32, 32)) / 1e6, 2) == 40.55


@pytest.mark.parametrize("name,blocks", [("resnet20", 3), ("resnet32", 5), ("resnet56", 9)])
def test_cifar_resnets_have_6n_plus_2_layers(name, blocks):
    model = create_model(name)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 6 * blocks + 1  # + the FC makes 6n + 2


@pytest.mark.parametrize("name", list_models())
def test_every_model_has_the_same_contract(name):
    model = create_model(name, num_classes=7, in_channels=1, width=4).eval()
    x = torch.rand(2, 1, 16, 16)
    f = model.features(x)
    assert f.shape == (2, model.feature_dim)
    assert torch.allclose(model.head(f), model(x))
    assert model(x).shape == (2, 7)


def test_option_b_shortcut_adds_projection_parameters():
    a = count_parameters(create_model("resnet20"))
    b = count_parameters(create_model("resnet20", shortcut="B"))
    assert b > a


def test_normalisation_lives_inside_the_model():
    m1 = create_model("resnet20", mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25]).eval()
    m2 = create_model("resnet20").eval()
    m2.load_state_dict({k: v for k, v in m1.state_dict().items() if "normalize" not in k}, strict=False)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(m1(x), m2((x - 0.5) / 0.25), atol=1e-5)
    assert "normalize.mean" in m1.state_dict()


def test_unknown_model_lists_known_names():
    with pytest.raises(UnknownNameError, match="resnet20"):
        create_model("resnet99")


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="shortcut"):
        create_model("resnet20", shortcut="C")
    with pytest.raises(ConfigError, match="width"):
        create_model("resnet20", width=0)
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("resnet20", num_classes=1)
