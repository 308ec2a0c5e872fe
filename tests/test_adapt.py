"""Few-shot adaptation methods and test-time augmentation views."""
from dataclasses import replace

import pytest
import torch
from conftest import REPO_PARAMS, make_toy_set, train_params
from torch import nn

from emopipe.data.store import TensorSet
from emopipe.engine.adapt import METHODS, adapt_and_report, adaptation_training
from emopipe.engine.evaluate import TTA, predict_proba
from emopipe.engine.fit import fit
from emopipe.errors import ParamError
from emopipe.modeling.checkpoint import input_spec
from emopipe.modeling.models import build
from emopipe.runtime import seed_everything, select_runtime

SPEC = input_spec(32, 3)
RUNTIME = select_runtime("fp32")
BATCH = 128  # evaluation batch


def adapt_params(method: str, **changes):
    """The repo's adapt section with a short adaptation run."""
    return replace(REPO_PARAMS.adapt, **{"method": method, "epochs": 4, "batch_size": 8, "lr": 1e-3, **changes})


def shifted(data: TensorSet, classes: int) -> TensorSet:
    """The same task in another look (darker, lower contrast), holding only the first `classes` classes."""
    keep = torch.nonzero(data.labels < classes).squeeze(1)
    part = data.subset(keep)
    return TensorSet(part.images // 3 + 20, part.labels, part.classes, part.paths)


@pytest.fixture(scope="module")
def domains():
    seed_everything(0)
    source = make_toy_set(n_per_class=16, size=32, seed=0)
    model = fit(build("small", 4, batch_norm=True), source, None, SPEC, train_params(epochs=6, batch_size=16, lr=3e-3), 0,
                RUNTIME, progress=False).model
    target = shifted(make_toy_set(n_per_class=12, size=32, seed=1), classes=3)
    shots = target.subset(torch.cat([torch.nonzero(target.labels == c).squeeze(1)[:4] for c in range(3)]))
    rest = target.subset(torch.cat([torch.nonzero(target.labels == c).squeeze(1)[4:] for c in range(3)]))
    test = make_toy_set(n_per_class=8, size=32, seed=2)
    return model, source, shots, rest, test


def run(domains, method: str, **changes):
    model, source, shots, rest, test = domains
    seed_everything(0)
    return adapt_and_report(model, shots, rest, test, source, SPEC, adapt_params(method, **changes), REPO_PARAMS.train, 0, RUNTIME,
                            BATCH)


def bn_buffers(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k}


def test_the_documented_methods_are_registered_and_an_unknown_one_is_refused(domains):
    assert set(METHODS) == {"finetune", "head", "bn", "replay"}  # the methods params.yaml's adapt.method lists
    model, source, shots, rest, test = domains
    with pytest.raises(ParamError, match="adapt.method='magic' is not a registered adapt method; choose one of: bn, finetune, head, replay"):
        adapt_and_report(model, shots, rest, test, source, SPEC, adapt_params("magic"), REPO_PARAMS.train, 0, RUNTIME, BATCH)


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
    with pytest.raises(ParamError, match="adapt.method=bn .* no batch-norm layer"):
        adapt_and_report(plain, shots, rest, test, source, SPEC, adapt_params("bn", epochs=1), REPO_PARAMS.train, 0, RUNTIME, BATCH)


def test_tta_views():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    assert set(TTA) == {"none", "flip", "multiscale"}
    assert len(TTA["none"](x, (1.0,))) == 1 and TTA["none"](x, (1.0,))[0] is x
    flip = TTA["flip"](x, (1.0, 0.5))
    assert len(flip) == 2 and torch.equal(flip[1], x.flip(-1))
    multi = TTA["multiscale"](x, (1.0, 0.5))
    assert len(multi) == 4 and all(v.shape == x.shape for v in multi)
    assert not torch.equal(multi[2], x)
    with pytest.raises(ParamError, match="eval.tta='rotate' is not a registered"):
        predict_proba(build("small", 4), torch.zeros((1, 3, 8, 8), dtype=torch.uint8), input_spec(8, 3), RUNTIME, tta="rotate")


def test_multiscale_at_scale_one_is_the_flip_average(domains):
    model, source = domains[0], domains[1]
    flip = predict_proba(model, source.images[:8], SPEC, RUNTIME, tta="flip")
    multi = predict_proba(model, source.images[:8], SPEC, RUNTIME, tta="multiscale", scales=(1.0,))
    assert (flip == multi).all()
    assert not (predict_proba(model, source.images[:8], SPEC, RUNTIME, tta="multiscale", scales=(1.0, 0.8)) == flip).all()


def test_the_adaptation_run_takes_the_adapt_budget_and_the_train_regularisation():
    """finetune, head and replay train with adaptation_training(adapt, train): the stage and the study alike."""
    p = REPO_PARAMS
    t = replace(p.train, weight_decay=0.01, label_smoothing=0.2, class_weights=False, loss="focal", focal_alpha={"happy": 2.0},
                scheduler="onecycle", weighted_sampler=True, grad_clip=1.0, early_stopping=3, augment="targeted",
                transfer=replace(p.train.transfer, freeze_epochs=2))
    run = adaptation_training(p.adapt, t)
    assert (run.epochs, run.batch_size, run.lr, run.augment) == (p.adapt.epochs, p.adapt.batch_size, p.adapt.lr, p.adapt.augment)
    assert (run.weight_decay, run.label_smoothing, run.class_weights) == (0.01, 0.2, False)
    assert (run.loss, run.focal_alpha, run.scheduler, run.weighted_sampler, run.grad_clip, run.early_stopping) == ("ce", {}, "none", False, 0.0, 0)
    assert run.transfer.freeze_epochs == 0  # nothing frozen (head freezes the backbone itself)
    varied = replace(p.adapt, method="head", epochs=3)
    assert adaptation_training(varied, t).epochs == 3 and varied.method == "head"


def test_the_study_draws_shots_from_the_shift_pool_by_group(tmp_path):
    """The adaptation study redraws the shots per seed from the split's shift rows: whole groups, the rest for evaluation."""
    import pandas as pd

    from emopipe.data import store
    from emopipe_studies.adaptation import draw, shift_pool

    data = make_toy_set(n_per_class=6, size=8)
    (tmp_path / "data" / "split").mkdir(parents=True)
    (tmp_path / "data" / "packed").mkdir(parents=True)
    groups = [i // 2 for i in range(len(data))]  # pairs of near-duplicates
    frame = pd.DataFrame({"label": [data.classes[i] for i in data.labels.tolist()], "group": groups})
    for name, rows in (("adapt", slice(0, 12)), ("eval", slice(12, None))):
        frame.iloc[rows].to_csv(tmp_path / "data" / "split" / f"shift_{name}.csv", index=False)
        idx = list(range(len(data)))[rows]
        store.save(tmp_path / "data" / "packed" / f"shift_{name}", data.subset(torch.tensor(idx)))
    pool = shift_pool(tmp_path)
    shots, rest = draw(pool, 2, seed=0)
    assert len(shots) == 8 and len(rest) == len(data) - 8
    assert torch.bincount(shots.labels, minlength=4).tolist() == [2, 2, 2, 2]
    group = {path: g for path, g in zip(data.paths, groups)}
    assert {group[p] for p in shots.paths}.isdisjoint(group[p] for p in rest.paths)
    assert draw(pool, 2, seed=0)[0].paths == shots.paths and draw(pool, 2, seed=1)[0].paths != shots.paths


def test_a_study_run_with_only_keeps_the_other_settings(tmp_path):
    from emopipe_studies.adaptation import kept_settings
    out = tmp_path / "adaptation.json"
    assert kept_settings(out, ["b"]) == {}  # nothing measured yet
    out.write_text('{"settings": {"a": {"seeds": [0]}, "b": {"seeds": [0]}}}')
    assert kept_settings(out, ["b"]) == {"a": {"seeds": [0]}}  # b is measured again
    assert kept_settings(out, None) == {}  # a full run replaces the file
