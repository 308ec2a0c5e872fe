from pathlib import Path

import pytest
import yaml

from emopipe.errors import ParamError
from emopipe.stage import load_params

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
        ({"model": "resnet9000"}, "model='resnet9000' is not a registered model"),
        ({"split.train": 0.8}, "split.train + split.val + split.test"),
        ({"train.augment": "heavy"}, "train.augment='heavy'"),
        ({"train.epochs": "ten"}, "train.epochs must be an integer"),
        ({"train.epoch": 3}, "unknown param train.epoch"),
        ({"data.source": "web"}, "data.source='web'"),
        ({"data.source": "folder"}, "data.folder must be set"),
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
        ({"train.loss": "hinge"}, "train.loss='hinge' is not a registered loss; choose one of: ce, focal"),
        ({"train.scheduler": "step"}, "train.scheduler='step' is not a registered scheduler"),
        ({"faces.detector": "dlib"}, "faces.detector='dlib' is not a registered detector; choose one of: haar, mtcnn"),
        ({"faces.align": True}, "faces.align needs eye landmarks, which the haar detector does not give"),
        ({"faces.align": "yes"}, "faces.align must be true or false"),
    ],
)
def test_bad_params_name_the_param(tmp_path, override, needle):
    with pytest.raises(ParamError) as err:
        load_params(write(tmp_path, override))
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_mtcnn_with_alignment_loads(tmp_path):
    p = load_params(write(tmp_path, {"faces.detector": "mtcnn", "faces.align": True}))
    assert (p.faces.detector, p.faces.align) == ("mtcnn", True)
    assert (load_params(REPO / "params.yaml").faces.detector, load_params(REPO / "params.yaml").faces.align) == ("haar", False)


def test_yaml11_exponent_strings_are_numbers(tmp_path):
    assert load_params(write(tmp_path, {"train.lr": "1e-4"})).train.lr == pytest.approx(1e-4)


def test_missing_keys_keep_section_defaults(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("shift: {source: synthetic, synthetic_counts: {happy: 3}}\ndata: {synthetic_counts: {happy: 3}}\n")
    p = load_params(path)
    assert p.shift.synthetic_domain == "shift" and p.data.synthetic_domain == "source"


def test_ints_for_floats_and_none_where_allowed(tmp_path):
    p = load_params(write(tmp_path, {"train.lr": 1, "data.folder": None, "train.focal_alpha": {"happy": 2}}))
    assert p.train.lr == 1.0 and isinstance(p.train.lr, float)
    assert p.data.folder is None and p.train.focal_alpha == {"happy": 2.0}


def test_an_annotation_without_a_check_is_a_bug_not_a_pass():
    from emopipe.config import _coerce

    with pytest.raises(TypeError, match="no rule for its annotation"):
        _coerce("train.sizes", tuple[int, ...], (1, 2))
