import pytest
import torch

from emopipe.checkpoint import input_spec, load_checkpoint, save_checkpoint
from emopipe.models import MODELS, build, count_parameters


def test_small_matches_the_seed_smallcnn():
    assert count_parameters(build("small", 6)) == 389_958


def test_wider_is_about_764k():
    assert count_parameters(build("wider", 6)) == pytest.approx(764_000, rel=0.01)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("channels", [1, 3])
def test_every_model_runs_at_any_size(name, channels):
    model = build(name, 5, channels).eval()
    for size in (32, 96):
        assert model(torch.zeros(2, channels, size, size)).shape == (2, 5)


def test_unknown_model_names_the_choices():
    with pytest.raises(KeyError, match="choose one of: small, wider"):
        build("nope", 3)


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    model = build("small", 4).eval()
    spec = input_spec(48, 3)
    save_checkpoint(tmp_path / "m.pt", model, "small", {}, ["a", "b", "c", "d"], spec)
    loaded, meta = load_checkpoint(tmp_path / "m.pt")
    x = torch.rand(2, 3, 48, 48)
    assert torch.equal(model(x), loaded(x))
    assert meta["classes"] == ["a", "b", "c", "d"] and meta["input"] == spec and meta["arch"] == "small"
    assert torch.load(tmp_path / "m.pt", weights_only=True)["arch"] == "small"
