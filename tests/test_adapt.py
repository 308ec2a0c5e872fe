"""Few-shot adaptation methods and test-time augmentation views."""
import pytest
import torch
from conftest import make_toy_set
from torch import nn

from emopipe.config import ADAPT_METHODS
from emopipe.data.store import TensorSet
from emopipe.engine.adapt import METHODS, AdaptConfig, adapt_and_report
from emopipe.engine.evaluate import predict_proba, tta_views
from emopipe.engine.fit import FitConfig, fit
from emopipe.errors import ParamError
from emopipe.modeling.checkpoint import input_spec
from emopipe.modeling.models import build
from emopipe.runtime import seed_everything, select_runtime

SPEC = input_spec(32, 3)
RUNTIME = select_runtime("fp32")


def shifted(data: TensorSet, classes: int) -> TensorSet:
    """The same task in another look (darker, lower contrast), holding only the first `classes` classes."""
    keep = torch.nonzero(data.labels < classes).squeeze(1)
    part = data.subset(keep)
    return TensorSet(part.images // 3 + 20, part.labels, part.classes, part.paths)


@pytest.fixture(scope="module")
def domains():
    seed_everything(0)
    source = make_toy_set(n_per_class=16, size=32, seed=0)
    model = fit(build("small", 4, batch_norm=True), source, None, SPEC, FitConfig(epochs=6, batch_size=16, lr=3e-3),
                RUNTIME, progress=False).model
    target = shifted(make_toy_set(n_per_class=12, size=32, seed=1), classes=3)
    shots = target.subset(torch.cat([torch.nonzero(target.labels == c).squeeze(1)[:4] for c in range(3)]))
    rest = target.subset(torch.cat([torch.nonzero(target.labels == c).squeeze(1)[4:] for c in range(3)]))
    test = make_toy_set(n_per_class=8, size=32, seed=2)
    return model, source, shots, rest, test


def run(domains, method: str, **changes):
    model, source, shots, rest, test = domains
    cfg = AdaptConfig(method, FitConfig(epochs=4, batch_size=8, lr=1e-3, seed=0), **changes)
    seed_everything(0)
    return adapt_and_report(model, shots, rest, test, source, SPEC, cfg, RUNTIME)


def bn_buffers(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k}


def test_every_configured_method_is_implemented():
    assert set(METHODS) == set(ADAPT_METHODS)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_reports_target_gain_forgetting_and_shots(domains, method):
    _, report = run(domains, method)
    assert report["method"] == method and report["classes"] == ["a", "b", "c"]
    assert report["shots_used"] == {"a": 4, "b": 4, "c": 4}
    assert set(report["before"]["per_class"]["d"]) and report["before"]["per_class"]["d"]["support"] == 0
    assert report["gain"] == round(report["after"]["macro_f1"] - report["before"]["macro_f1"], 4)
    assert report["forgetting"] == round(report["in_domain_before"]["macro_f1"] - report["in_domain_after"]["macro_f1"], 4)


def test_adaptation_leaves_the_source_model_untouched(domains):
    before = {k: v.clone() for k, v in domains[0].state_dict().items()}
    for method in METHODS:
        run(domains, method)
    assert all(torch.equal(before[k], v) for k, v in domains[0].state_dict().items())


def test_bn_changes_only_statistics_and_keeps_the_source_ones_for_the_source(domains):
    adapted, report = run(domains, "bn")
    source, target = domains[0].state_dict(), adapted.target.state_dict()
    changed = {k for k in source if not torch.equal(source[k].float(), target[k].float())}
    assert changed and all("running" in k or "num_batches" in k for k in changed)
    assert adapted.source is domains[0] and report["forgetting"] == 0.0


def test_head_trains_the_classifier_alone_with_frozen_statistics(domains):
    adapted, _ = run(domains, "head")
    source, target = domains[0].state_dict(), adapted.target.state_dict()
    changed = {k for k in source if not torch.equal(source[k], target[k])}
    assert changed and all(k.startswith("head.") for k in changed)


def test_finetune_trains_the_backbone_and_replay_mixes_in_source_images(domains):
    tuned, _ = run(domains, "finetune")
    assert any(not torch.equal(v, tuned.target.state_dict()[k]) for k, v in domains[0].state_dict().items() if k.startswith("features."))
    without = run(domains, "replay", replay=0.0)[0].target.state_dict()
    assert all(torch.equal(v, tuned.target.state_dict()[k]) for k, v in without.items())  # no replay: plain finetune
    replayed = run(domains, "replay", replay=2.0)[0].target.state_dict()
    assert any(not torch.equal(v, without[k]) for k, v in replayed.items())


def test_bn_needs_batch_norm_layers(domains):
    _, source, shots, rest, test = domains
    plain = build("small", 4)
    cfg = AdaptConfig("bn", FitConfig(epochs=1, batch_size=8, lr=1e-3))
    with pytest.raises(ParamError, match="adapt.method=bn .* no batch-norm layer"):
        adapt_and_report(plain, shots, rest, test, source, SPEC, cfg, RUNTIME)


def test_tta_views():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    assert len(tta_views(x, "none")) == 1 and tta_views(x, "none")[0] is x
    flip = tta_views(x, "flip", (1.0, 0.5))
    assert len(flip) == 2 and torch.equal(flip[1], x.flip(-1))
    multi = tta_views(x, "multiscale", (1.0, 0.5))
    assert len(multi) == 4 and all(v.shape == x.shape for v in multi)
    assert not torch.equal(multi[2], x)


def test_multiscale_at_scale_one_is_the_flip_average(domains):
    model, source = domains[0], domains[1]
    flip = predict_proba(model, source.images[:8], SPEC, RUNTIME, tta="flip")
    multi = predict_proba(model, source.images[:8], SPEC, RUNTIME, tta="multiscale", scales=(1.0,))
    assert (flip == multi).all()
    assert not (predict_proba(model, source.images[:8], SPEC, RUNTIME, tta="multiscale", scales=(1.0, 0.8)) == flip).all()


def test_the_adapt_params_become_one_config_for_the_stage_and_the_study():
    from pathlib import Path

    from emopipe.stage import load_params

    p = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    t = p.train
    cfg = AdaptConfig.from_params(p.adapt, p.seed, t.weight_decay, t.label_smoothing, t.class_weights)
    assert (cfg.method, cfg.replay, cfg.fit.epochs, cfg.fit.lr, cfg.fit.seed) == (p.adapt.method, p.adapt.replay, p.adapt.epochs, p.adapt.lr, p.seed)
    assert not cfg.fit.weighted_sampler and cfg.fit.weight_decay == t.weight_decay and cfg.fit.augment == p.adapt.augment
    varied = AdaptConfig.from_params(p.adapt, 7, t.weight_decay, t.label_smoothing, t.class_weights, "head")
    assert (varied.method, varied.fit.seed) == ("head", 7)


def test_the_study_draws_shots_from_the_shift_pool_by_group(tmp_path):
    """tools.adaptation redraws the shots per seed from the split's shift rows: whole groups, the rest for evaluation."""
    import pandas as pd

    from emopipe.data import store
    from emopipe.tools.adaptation import draw, shift_pool

    data = make_toy_set(n_per_class=6, size=8)
    (tmp_path / "data" / "split").mkdir(parents=True)
    (tmp_path / "data" / "packed").mkdir(parents=True)
    groups = [i // 2 for i in range(len(data))]  # pairs of near-duplicates
    frame = pd.DataFrame({"label": [data.classes[i] for i in data.labels.tolist()], "group": groups})
    for name, rows in (("adapt", slice(0, 12)), ("eval", slice(12, None))):
        frame.iloc[rows].to_csv(tmp_path / "data" / "split" / f"shift_{name}.csv", index=False)
        idx = list(range(len(data)))[rows]
        store.save(tmp_path / "data" / "packed" / f"shift_{name}.pt", data.subset(torch.tensor(idx)))
    pool = shift_pool(tmp_path)
    shots, rest = draw(pool, 2, seed=0)
    assert len(shots) == 8 and len(rest) == len(data) - 8
    assert torch.bincount(shots.labels, minlength=4).tolist() == [2, 2, 2, 2]
    group = {path: g for path, g in zip(data.paths, groups)}
    assert {group[p] for p in shots.paths}.isdisjoint(group[p] for p in rest.paths)
    assert draw(pool, 2, seed=0)[0].paths == shots.paths and draw(pool, 2, seed=1)[0].paths != shots.paths


def test_a_study_run_with_only_keeps_the_other_settings(tmp_path):
    from emopipe.tools.adaptation import kept_settings
    out = tmp_path / "adaptation.json"
    assert kept_settings(out, ["b"]) == {}  # nothing measured yet
    out.write_text('{"settings": {"a": {"seeds": [0]}, "b": {"seeds": [0]}}}')
    assert kept_settings(out, ["b"]) == {"a": {"seeds": [0]}}  # b is measured again
    assert kept_settings(out, None) == {}  # a full run replaces the file
