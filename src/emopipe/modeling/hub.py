"""`model: hub`: an image-classification checkpoint from the local Hugging Face cache, e.g.
`dima806/facial_emotions_image_detection` (a ViT-B/16 fine-tuned for facial emotions).

Nothing is downloaded: the files must already be in the cache ($HF_HUB_CACHE, default
~/.cache/huggingface/hub), or the build stops with one line naming the files and the folder.
The checkpoint's labels are mapped onto the project's classes by name (angry → anger,
sadness → sad, ...): a class both know starts from the hub model's own output (zero-shot), a
class it lacks gets a new output — or, with `zero_shot: true`, one that is never predicted, so
evaluation shows the hub model's own answers. Needs the optional extra: pip install -e '.[hub]'.
"""
from __future__ import annotations

import json

import torch
from torch import nn
from torch.nn import functional as F

from emopipe.errors import ParamError
from emopipe.modeling.pretrained import PretrainedWeightsError

# Label spellings of public emotion checkpoints -> the project's class names (sorted folder names).
SYNONYMS = {"angry": "anger", "anger": "anger", "sad": "sad", "sadness": "sad", "happy": "happy", "happiness": "happy",
            "joy": "happy", "fear": "fear", "fearful": "fear", "scared": "fear", "disgust": "disgust", "disgusted": "disgust",
            "surprise": "surprise", "surprised": "surprise", "neutral": "neutral", "contempt": "contempt", "pain": "pain"}
FILES = ("config.json", "model.safetensors (or pytorch_model.bin)", "preprocessor_config.json (optional)")


def canonical(label: str) -> str:
    name = label.strip().lower()
    return SYNONYMS.get(name, name)


class HubClassifier(nn.Module):
    """The hub model, fed as it was trained: grey input copied to RGB, resized to its image size,
    re-normalised from the project's [-1, 1] to its processor's mean and std."""

    def __init__(self, net: nn.Module, image_size: int, mean: list[float], std: list[float]):
        super().__init__()
        self.net, self.image_size = net, image_size
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return self.net(pixel_values=(x * 0.5 + 0.5 - self.mean) / self.std).logits

    def _layers(self) -> list[nn.Module]:
        return list(encoder_layers(self.net.base_model))

    def feature_blocks(self) -> list[nn.Module]:
        """The encoder's layers (their tokens read as a patch grid by explain)."""
        return self._layers()

    def transfer_groups(self) -> list[nn.Module]:
        """[classifier, last layer with the final norm, ..., first layer, embeddings]."""
        base = self.net.base_model
        *layers, last = self._layers()
        rest = [m for name, m in base.named_children() if name not in ("encoder", "layers", "embeddings")]
        return [self.net.classifier, nn.ModuleList([last, *rest]), *reversed(layers), base.embeddings]


def encoder_layers(base: nn.Module) -> nn.ModuleList | None:
    """The transformer's blocks: `layers` (transformers 5) or `encoder.layer` (4.x)."""
    return getattr(base, "layers", None) or getattr(getattr(base, "encoder", None), "layer", None)


def load(name: str, revision: str | None, weights: bool):
    """(the hub model — with its weights, or freshly initialised —, its config, its processor settings),
    from the local cache only."""
    try:
        import transformers
        from huggingface_hub import constants
    except ImportError:
        raise ParamError("model: hub needs the optional extra: pip install -e '.[hub]' (transformers)") from None
    transformers.utils.logging.disable_progress_bar()
    try:
        config = transformers.AutoConfig.from_pretrained(name, revision=revision, local_files_only=True)
        auto = transformers.AutoModelForImageClassification
        net = auto.from_pretrained(name, revision=revision, local_files_only=True) if weights else auto.from_config(config)
    except OSError:
        raise PretrainedWeightsError(
            f"model_args.repo_id={name!r} is not in the local Hugging Face cache {constants.HF_HUB_CACHE}: on a machine with "
            f"internet run `huggingface-cli download {name}` and copy its models--{name.replace('/', '--')} folder "
            f"({', '.join(FILES)}) there (or set HF_HUB_CACHE); nothing downloads while the pipeline runs") from None
    return net, config, _processor(name, revision)


def _processor(name: str, revision: str | None) -> dict:
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(name, "preprocessor_config.json", revision=revision)
    return json.loads(open(path).read()) if isinstance(path, str) else {}


def hub(num_classes: int, in_channels: int, classes: list[str] | None, name: str, revision: str | None, zero_shot: bool,
        pretrained: bool) -> HubClassifier:
    """The hub checkpoint `name` with a classifier for `classes`; rows of classes it knows come from its own."""
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels={in_channels}: hub models take 1 (grey, copied to RGB) or 3 channels")
    net, config, processor = load(name, revision, weights=pretrained)
    if not isinstance(getattr(net, "classifier", None), nn.Linear) or encoder_layers(net.base_model) is None:
        raise ParamError(f"model_args.repo_id={name!r}: {type(net).__name__} is not a transformer image classifier with a "
                         "linear `classifier` (ViT, DeiT, BEiT, ...); pick such a checkpoint")
    old = net.classifier
    theirs = {canonical(label): int(i) for i, label in config.id2label.items()}
    head = nn.Linear(old.in_features, num_classes)
    with torch.no_grad():
        for k, cls in enumerate(classes or []):
            if cls in theirs:
                head.weight[k], head.bias[k] = old.weight[theirs[cls]], old.bias[theirs[cls]]
            elif zero_shot:
                head.weight[k].zero_()
                head.bias[k] = -20.0  # a class the hub model never learnt: never its answer
    net.classifier = head
    size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    return HubClassifier(net, size, processor.get("image_mean", [0.5] * 3), processor.get("image_std", [0.5] * 3))
