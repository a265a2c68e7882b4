"""Per-objective schedules and the dynamic (loss_ratio, gradnorm) weighting of objectives."""
import json
import math

import pytest
import torch

from lmdistill.config import TrainConfig, build_config
from lmdistill.errors import UserError
from lmdistill.run import train
from lmdistill.train.schedule import WeightSchedule
from lmdistill.train.weighting import Weighting
from conftest import tiny_config
from tolerance import EPS64, TINY_STUDENT, training_terms, typical, worst


def weighting(method, n=2, **cfg):
    settings = TrainConfig(weighting={"method": method, **cfg}).weighting
    return Weighting(settings, [1.0] * n, [WeightSchedule()] * n, 100)


def test_schedule_factor_by_hand():
    s = WeightSchedule(start_step=10, warmup_steps=5, decay="linear", final=0.2, end_step=25)
    got = [s.factor(step, 40) for step in (0, 9, 10, 12, 14, 15, 20, 25, 39)]
    # off, off, ramp 1/5, 3/5, 5/5, then 1 -> 0.2 linearly over steps 15..25, 0.2 after
    want = [0, 0, 0.2, 0.6, 1.0, 1.0, 0.6, 0.2, 0.2]
    assert got == pytest.approx(want)
    cosine = WeightSchedule(decay="cosine")  # to 0 at train.steps: half way it is 0.5
    assert cosine.factor(50, 100) == pytest.approx(0.5) and cosine.factor(0, 100) == 1.0
    assert WeightSchedule().factor(99, 100) == 1.0


def test_schedule_rejects_an_end_before_its_warmup_ends():
    with pytest.raises(UserError, match="end_step 5 must come after start_step \\+ warmup_steps \\(8\\)"):
        build_config({"objectives": [{"name": "ce", "schedule": {"start_step": 3, "warmup_steps": 5, "end_step": 5}}]})
    with pytest.raises(UserError, match="unknown key 'objectives\\[0\\].pair_schedules\\[1\\].start'.*start_step"):
        build_config({"objectives": [{"name": "feature", "pair_schedules": [{}, {"start": 5}]}]})
    with pytest.raises(UserError, match="unknown key 'objectives\\[0\\].schedule.warmup'.*warmup_steps"):
        build_config({"objectives": [{"name": "ce", "schedule": {"warmup": 5}}]})


@pytest.mark.numerical
def test_loss_ratio_makes_a_thousand_times_smaller_term_count_as_much():
    w = weighting("loss_ratio")
    for step in range(60):
        w.after_step(step, [7.0, 0.007])
    weighted = [wi * li for wi, li in zip(w.weights(60), [7.0, 0.007])]
    # Python floats (float64). Each step moves the log-factors half way (rate 0.5) to their target: after 60 steps
    # 0.5^60 of the initial gap log(1000) is left. Rounding: the EMA's 3 roundings per step over its 1 / (1 - 0.9) =
    # 10-step memory (30, relative: absolute in log space), and <= 10 roundings per step of logs of size <= log(1000)
    # (target, mean, move, shift, exp), each step's error halved by the next: twice that; two factors
    gap = math.log(1000)
    rel = 0.5 ** 60 * gap + 2 * 2 * (worst(30, 1.0, EPS64) + worst(10, gap, EPS64))
    assert weighted[0] == pytest.approx(weighted[1], rel=rel)
    assert sum(w.factors) == pytest.approx(2.0)  # factors keep mean 1 (a few float64 roundings: approx's default)


def constructed_problem(seed=0):
    """Two quadratic losses on one shared parameter vector whose gradient norms differ ~1e6-fold."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(6, 8, generator=g, dtype=torch.float64), torch.randn(6, 8, generator=g, dtype=torch.float64)
    ya, yb = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    return (lambda th: 1000.0 * (a @ th - ya).pow(2).sum(), lambda th: 1e-3 * (b @ th - yb).pow(2).sum())


@pytest.mark.numerical
def test_gradnorm_equalises_gradient_contributions_on_a_constructed_problem():
    losses = constructed_problem()
    theta = torch.zeros(8, dtype=torch.float64, requires_grad=True)
    w = weighting("gradnorm", every=1, rate=0.5)
    optimizer = torch.optim.Adam([theta], lr=0.01)
    ratios, fixed = [], []
    for step in range(30):
        values = [f(theta) for f in losses]
        norms = [torch.autograd.grad(v, theta, retain_graph=True)[0].norm().item() for v in values]
        fixed.append(norms[0] / norms[1])
        w.from_gradients(step, norms, [v.item() for v in values])
        weights = w.weights(step)
        ratios.append(weights[0] * norms[0] / (weights[1] * norms[1]))  # contribution ratio after the update
        optimizer.zero_grad()
        sum(wi * v for wi, v in zip(weights, values)).backward()
        optimizer.step()
    assert min(fixed) > 1e4  # with equal fixed weights the first loss would drown the second throughout
    # rate 0.5: half way in log space at once. Float64 throughout: about 20 roundings (target, its log, the mean,
    # the move, the shift's exps, sum and log, exp, the weights and the ratios) of logs of size <= log(fixed[0])
    assert ratios[0] == pytest.approx(math.sqrt(fixed[0]), rel=worst(20, math.log(fixed[0]), EPS64))
    assert all(abs(math.log(r)) < 0.05 for r in ratios[-10:])  # then equal contributions while theta moves


def test_gradnorm_alpha_favours_the_component_whose_loss_fell_less():
    w = weighting("gradnorm", every=1, rate=1.0, alpha=1.0)
    w.from_gradients(0, [1.0, 1.0], [4.0, 4.0])   # first measurement: L(0)
    w.from_gradients(1, [1.0, 1.0], [4.0, 1.0])   # loss ratios 1 and 1/4: relative 1.6 and 0.4
    assert w.factors[0] / w.factors[1] == pytest.approx(4.0)
    assert w.factors == pytest.approx([1.6, 0.4])


def test_components_switched_off_by_their_schedule_are_left_out_of_the_balance():
    settings = TrainConfig(weighting={"method": "loss_ratio", "rate": 1.0}).weighting
    w = Weighting(settings, [1.0, 1.0, 1.0], [WeightSchedule(), WeightSchedule(), WeightSchedule(start_step=50)], 100)
    w.after_step(0, [2.0, 0.5, None])
    assert w.factors[2] == 1.0 and w.factors[0] * 2.0 == pytest.approx(w.factors[1] * 0.5)
    assert w.weights(0)[2] == 0.0 and w.on(0) == [True, True, False] and w.on(50) == [True, True, True]


def _records(run_dir):
    return [json.loads(l) for l in open(run_dir / "metrics.jsonl") if json.loads(l)["kind"] == "train"]


@pytest.mark.numerical
@pytest.mark.e2e
def test_gradnorm_measurement_matches_separate_backward_passes(tmp_path, word_data):
    """After a measurement with rate 1, weight x gradient norm (each measured by its own backward pass at the
    parameters both objectives reach) is the same for CE and KD."""
    from lmdistill.build import build_parts, wrap
    from lmdistill.run import make_accelerator
    from lmdistill.train.loop import Trainer
    config = build_config(tiny_config(tmp_path, word_data,
                                      train={"weighting": {"method": "gradnorm", "every": 1, "rate": 1.0}}))
    parts = build_parts(config)
    student, teacher = wrap(parts)
    trainer = Trainer(parts, student, teacher, make_accelerator(config), tmp_path, log=lambda *_: None)
    batch = trainer._micro_batches(0)[0]
    trainer._measure_gradients(0, batch)
    norms = []
    for objective in trainer.objectives:
        student.zero_grad()
        s = student(batch["input_ids"], batch["attention_mask"], batch["labels"])
        t = teacher(batch)
        (objective.loss(s, t, batch) / len(s.targets)).backward()
        norms.append(math.sqrt(sum(p.grad.double().pow(2).sum().item() for p in student.parameters())))
    contributions = [w * g for w, g in zip(trainer.weighting.weights(0), norms)]
    # the trainer's measurement and these passes round differently (float32 of one step: tolerance.py)
    rel = typical(training_terms(parts.teacher.config, TINY_STUDENT, config.data.max_length, parts.vocab_size, 1))
    assert contributions[0] == pytest.approx(contributions[1], rel=rel)
    assert abs(math.log(norms[0] / norms[1])) > 0.1  # not equal by accident


@pytest.mark.numerical
@pytest.mark.parametrize("method", ["loss_ratio", "gradnorm"])
@pytest.mark.e2e
def test_dynamic_weights_are_logged_used_and_resumed_exactly(tmp_path, word_data, method):
    def config(run):
        return build_config(tiny_config(tmp_path / run, word_data, train={
            "steps": 5, "weighting": {"method": method, **({"every": 2} if method == "gradnorm" else {})}}))
    train(config("a"), log=lambda *_: None)
    records = _records(tmp_path / "a")
    weights = [(r["weight_ce"], r["weight_logit_kd"]) for r in records]
    # loss_ratio starts from the configured weights (no loss seen yet); gradnorm measures before step 1
    assert (weights[0] == (0.5, 0.5)) == (method == "loss_ratio") and all(w != (0.5, 0.5) for w in weights[1:])
    assert weights[1] != weights[-1]
    for r in records:  # the logged total is the sum of the logged weights times the components
        # the trainer logs exactly this Python-float sum, in this order (JSON keeps floats exactly)
        assert r["loss"] == r["weight_ce"] * r["ce"] + r["weight_logit_kd"] * r["logit_kd"]
        assert (r["weight_ce"] + r["weight_logit_kd"]) == pytest.approx(1.0)  # configured 0.5 + 0.5, factors mean 1
    split = config("b")
    train(split, stop_at=3, log=lambda *_: None)
    train(split, resume=True, log=lambda *_: None)
    assert [r["loss"] for r in _records(tmp_path / "b")] == [r["loss"] for r in records]


@pytest.mark.e2e
def test_scheduled_pairs_and_objectives_switch_on_during_training(tmp_path, word_data):
    """Hierarchical transfer: two feature pairs with their own weights and schedules, a KD term starting late."""
    run = tmp_path / "run"
    config = build_config(tiny_config(run, word_data, train={"steps": 4}, objectives=[
        {"name": "ce"},
        {"name": "logit_kd", "schedule": {"start_step": 2}},
        {"name": "feature", "selector": "random", "layers": "all", "pair_weights": [1, 3],
         "pair_schedules": [{}, {"start_step": 1, "warmup_steps": 2}]}]))
    train(config, log=lambda *_: None)
    records = _records(run)
    assert ["logit_kd" in r for r in records] == [False, False, True, True]
    assert [r["weight_logit_kd"] for r in records] == [0, 0, 1, 1]
    with pytest.raises(UserError, match="pair_schedules has 1 entries for 2 layer pairs"):
        train(build_config(tiny_config(tmp_path / "x", word_data, objectives=[
            {"name": "feature", "selector": "random", "layers": "all", "pair_schedules": [{}]}])), log=lambda *_: None)
    with pytest.raises(UserError, match="at step 1 every objective \\(ce\\) is switched off by its schedule"):
        train(build_config(tiny_config(tmp_path / "y", word_data, objectives=[
            {"name": "ce", "schedule": {"start_step": 1}}])), log=lambda *_: None)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()  # refused before writing anything
