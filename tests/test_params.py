from pathlib import Path

import pytest
import yaml

from emopipe.apps.recipe import check_choices
from emopipe.config import load_params
from emopipe.data.faces.detectors import make_detector, require_landmarks
from emopipe.data.sources import fetch
from emopipe.errors import ParamError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, override: dict) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for dotted, value in override.items():
        *parents, last = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[last] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_repo_params_load():
    p = load_params(REPO / "params.yaml")
    assert p.model == "small"
    assert p.shift.synthetic_domain == "shift"
    assert abs(p.split.train + p.split.val + p.split.test - 1) < 1e-9


@pytest.mark.parametrize(
    "override, needle",
    [
        ({"split.train": 0.8}, "split.train + split.val + split.test"),
        ({"train.folds": 3}, "param train.folds is now train.cv_folds (k-fold cross-validation"),
        ({"split.folds": 3}, "param split.folds is now split.test_folds"),
        ({"train.epochs": "ten"}, "train.epochs must be an integer"),
        ({"train.epoch": 3}, "unknown param train.epoch"),
        ({"input.channels": 2}, "input.channels=2"),
        ({"train.class_weights": "yes"}, "train.class_weights must be true or false"),
        ({"train.epochs": "10"}, "train.epochs must be an integer, got '10'"),
        ({"shift.render.contrast": 0}, "shift.render.contrast=0"),
        ({"shift.render.blur": -1}, "shift.render.blur=-1"),
        ({"train.epochs": True}, "train.epochs must be an integer, got True"),
        ({"train.epochs": None}, "train.epochs must be an integer, got None"),
        ({"train.lr": float("nan")}, "train.lr must be a finite number, got nan"),
        ({"train.lr": [0.1]}, "train.lr must be a finite number, got [0.1]"),
        ({"train.focal_alpha": [1, 2]}, "train.focal_alpha must be a mapping, got [1, 2]"),
        ({"train.focal_alpha": None}, "train.focal_alpha must be a mapping, got None"),
        ({"train.focal_alpha": {"happy": "x"}}, "train.focal_alpha.happy must be a finite number, got 'x'"),
        ({"model_args": None}, "model_args must be a mapping, got None"),
        ({"data.folder": 3}, "data.folder must be a string, got 3"),
        ({"train.transfer": [1]}, "train.transfer must be a mapping, got [1]"),
        ({"split.group_pattern": "^(.+_"}, "split.group_pattern='^(.+_' is not a regular expression"),
        ({"split.group_pattern": "^.+_"}, "split.group_pattern='^.+_' needs a capture group"),
        ({"faces.align": "yes"}, "faces.align must be true or false"),
    ],
)
def test_bad_params_name_the_param(tmp_path, override, needle):
    with pytest.raises(ParamError) as err:
        load_params(write(tmp_path, override))
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "override, needle",
    [
        ({"model": "resnet9000"}, "model='resnet9000' is not a registered model"),
        ({"train.augment": "heavy"}, "train.augment='heavy'"),
        ({"adapt.augment": "heavy"}, "adapt.augment='heavy' is not a registered"),
        ({"data.source": "web"}, "data.source='web'"),
        ({"shift.source": "web"}, "shift.source='web' is not a registered source"),
        ({"train.loss": "hinge"}, "train.loss='hinge' is not a registered loss; choose one of: ce, focal"),
        ({"train.scheduler": "step"}, "train.scheduler='step' is not a registered scheduler"),
        ({"faces.detector": "dlib"}, "faces.detector='dlib' is not a registered detector; choose one of: haar, mtcnn"),
        ({"eval.tta": "rotate"}, "eval.tta='rotate' is not a registered"),
        ({"adapt.method": "magic"}, "adapt.method='magic' is not a registered"),
        ({"oversample.method": "smote"}, "oversample.method='smote' is not a registered"),
    ],
)
def test_bad_choices_name_the_param(tmp_path, override, needle):
    """A name that is not in its registry: loads (the registry, not config.py, owns the choices),
    and is refused by the lookup of every registered choice (`emopipe recipe`, before a long run)."""
    p = load_params(write(tmp_path, override))
    with pytest.raises(ParamError) as err:
        check_choices(p)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_the_repo_params_name_registered_choices():
    check_choices(load_params(REPO / "params.yaml"))


@pytest.mark.parametrize(
    "override, section, needle",
    [
        ({"data.source": "folder"}, "data", "data.folder must be set when data.source is 'folder'"),
        ({"shift.source": "folder"}, "shift", "shift.folder must be set when shift.source is 'folder'"),
        ({"data.source": "none"}, "data", "data.source: none leaves the main domain without images"),
        ({"data.synthetic_counts": {}}, "data", "data.synthetic_counts must name at least one class"),
    ],
)
def test_sources_refuse_params_that_bring_no_images(tmp_path, override, section, needle):
    """Checked by the source when it runs (the download stage), before anything is written."""
    p = load_params(write(tmp_path, override))
    out = tmp_path / "raw"
    with pytest.raises(ParamError) as err:
        fetch(getattr(p, section), section, out, seed=0, progress=False)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()


def test_shift_source_none_brings_no_images(tmp_path):
    p = load_params(write(tmp_path, {"shift.source": "none"}))
    result = fetch(p.shift, "shift", tmp_path / "raw", seed=0, progress=False)
    assert result.manifest.empty and result.rejects.empty


def test_alignment_needs_a_detector_with_landmarks(tmp_path):
    p = load_params(write(tmp_path, {"faces.align": True}))  # with the default detector, haar
    with pytest.raises(ParamError) as err:
        require_landmarks(make_detector(p.faces.detector), p.faces.align)
    assert "faces.align needs eye landmarks, which the haar detector does not give" in str(err.value)
    assert "\n" not in str(err.value)


def test_mtcnn_with_alignment_loads(tmp_path):
    p = load_params(write(tmp_path, {"faces.detector": "mtcnn", "faces.align": True}))
    assert (p.faces.detector, p.faces.align) == ("mtcnn", True)
    assert (load_params(REPO / "params.yaml").faces.detector, load_params(REPO / "params.yaml").faces.align) == ("haar", False)
    check_choices(p)


def test_yaml11_exponent_strings_are_numbers(tmp_path):
    assert load_params(write(tmp_path, {"train.lr": "1e-4"})).train.lr == pytest.approx(1e-4)


def test_a_missing_key_is_an_error_naming_it(tmp_path):
    """params.yaml is the one source of defaults: a partial params file is refused, not filled in."""
    path = tmp_path / "params.yaml"
    path.write_text("shift: {source: synthetic, synthetic_counts: {happy: 3}}\ndata: {synthetic_counts: {happy: 3}}\n")
    with pytest.raises(ParamError) as err:
        load_params(path)
    assert "params.yaml does not set " in str(err.value) and "every param must be set" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_missing_nested_key_is_named_with_its_section(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    del params["train"]["transfer"]["backbone_lr"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamError, match=r"params.yaml does not set train.transfer.backbone_lr: every param must be set"):
        load_params(path)


def test_ints_for_floats_and_none_where_allowed(tmp_path):
    p = load_params(write(tmp_path, {"train.lr": 1, "data.folder": None, "train.focal_alpha": {"happy": 2}}))
    assert p.train.lr == 1.0 and isinstance(p.train.lr, float)
    assert p.data.folder is None and p.train.focal_alpha == {"happy": 2.0}


def test_an_annotation_without_a_check_is_a_bug_not_a_pass():
    from emopipe.config import _coerce

    with pytest.raises(TypeError, match="no rule for its annotation"):
        _coerce("train.sizes", tuple[int, ...], (1, 2))
