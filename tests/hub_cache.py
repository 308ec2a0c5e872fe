"""A tiny random image-classification checkpoint laid out as the Hugging Face cache stores one."""
import json
from pathlib import Path

REPO_ID = "tiny/vit-emotions"
LABELS = ("angry", "happy", "sad", "neutral")  # FER-style names: angry -> anger, ...
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def make_cache(root: Path) -> Path:
    """root/models--tiny--vit-emotions/{refs/main, snapshots/<commit>/...}: a 2-layer ViT, 32 px, patch 8."""
    import torch
    import transformers

    folder = root / f"models--{REPO_ID.replace('/', '--')}"
    snapshot = folder / "snapshots" / COMMIT
    torch.manual_seed(0)
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                                    patch_size=8, id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    transformers.ViTForImageClassification(config).save_pretrained(snapshot)
    (snapshot / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(COMMIT)
    return root
