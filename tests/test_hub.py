"""model: hub — a checkpoint from the local Hugging Face cache, offline; labels mapped by name."""
import pytest
import torch
from hub_cache import COMMIT, REPO_ID, make_cache
from test_models import check_describes_itself
from torch.nn import functional as F

from emopipe.modeling.models import build
from emopipe.modeling.pretrained import PretrainedWeightsError

transformers = pytest.importorskip("transformers", reason="the optional extra: pip install -e '.[hub]'")
CLASSES = ["anger", "disgust", "fear", "happy", "pain", "sad"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    import huggingface_hub.constants

    root = make_cache(tmp_path_factory.mktemp("hf"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield root


def test_zero_shot_outputs_are_the_hub_models_own_for_the_classes_it_knows(cache):
    model = build("hub", len(CLASSES), 1, CLASSES, repo_id=REPO_ID, zero_shot=True).eval()
    hub = transformers.AutoModelForImageClassification.from_pretrained(cache / f"models--tiny--vit-emotions/snapshots/{COMMIT}").eval()
    x = torch.rand(3, 1, 40, 40) * 2 - 1  # the project's [-1, 1] grey input at 40 px
    with torch.no_grad():
        ours = model(x)
        theirs = hub(pixel_values=F.interpolate(x.expand(-1, 3, -1, -1), size=(32, 32), mode="bilinear", align_corners=False)).logits
    for k, name in enumerate(CLASSES):
        if name in ("anger", "happy", "sad"):
            assert torch.allclose(ours[:, k], theirs[:, ("anger", "happy", "sad").index(name)], atol=1e-5)
        else:  # disgust, fear, pain: the tiny hub model never learnt them
            assert (ours[:, k] < -10).all()


def test_for_fine_tuning_unknown_classes_start_as_new_outputs_and_it_describes_itself(cache):
    model = build("hub", len(CLASSES), 3, CLASSES, repo_id=REPO_ID)
    assert model.net.classifier.bias[CLASSES.index("pain")] > -1  # a new output, not a never-predicted one
    check_describes_itself(model, channels=3, size=32)


def test_a_checkpoint_missing_from_the_cache_is_one_line_saying_where_to_put_it(cache):
    with pytest.raises(PretrainedWeightsError, match=f"not in the local Hugging Face cache {cache}.*models--nobody--nothing"):
        build("hub", 6, 3, CLASSES, repo_id="nobody/nothing")
