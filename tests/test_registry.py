"""Registries: every param that names a choice is a key of one, checked where the registry lives."""
import pytest

from emopipe.errors import ParamError
from emopipe.registry import Registry


def test_a_registry_maps_names_to_what_was_registered():
    things = Registry("train.thing", "thing")

    @things.register("one")
    def one():
        return 1

    assert things.lookup("one") is one and list(things) == ["one"]
    with pytest.raises(ValueError, match="registered twice"):
        things.register("one")(lambda: 2)


def test_an_unknown_name_is_one_line_naming_the_param_and_the_choices():
    things = Registry("train.thing", "thing")
    things["b"], things["a"] = 1, 2
    with pytest.raises(ParamError, match=r"^train.thing='c' is not a registered thing; choose one of: a, b$"):
        things.lookup("c")
    with pytest.raises(ParamError, match=r"^adapt.thing='c'"):  # one registry, two params (train.augment, adapt.augment)
        things.lookup("c", "adapt.thing")


def test_each_choice_param_has_its_registry_beside_its_implementation():
    from emopipe.data.augment import POLICIES
    from emopipe.data.faces.detectors import DETECTORS
    from emopipe.data.oversample import METHODS as OVERSAMPLING
    from emopipe.data.sources import SOURCES
    from emopipe.engine.adapt import METHODS as ADAPTATION
    from emopipe.engine.evaluate import TTA
    from emopipe.modeling.losses import LOSSES
    from emopipe.modeling.models import MODELS
    from emopipe.modeling.schedulers import SCHEDULERS

    assert {r.param for r in (MODELS, LOSSES, SCHEDULERS, POLICIES, DETECTORS, SOURCES, OVERSAMPLING, ADAPTATION, TTA)} == {
        "model", "train.loss", "train.scheduler", "train.augment", "faces.detector", "data.source", "oversample.method",
        "adapt.method", "eval.tta"}
    assert set(ADAPTATION) == {"finetune", "head", "bn", "replay"} and set(SOURCES) == {"synthetic", "kaggle", "folder", "none"}
    assert set(OVERSAMPLING) == {"none", "balance", "targeted"} and set(TTA) == {"none", "flip", "multiscale"}
