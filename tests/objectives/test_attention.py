"""MiniLM attention transfer: the loss against a float64 brute force written from the definitions (value and
gradient), config mistakes, and a real run (the capture itself: tests/teachers/test_capture.py)."""
import json
import math
from types import SimpleNamespace

import pytest
import torch
from pydantic import ValidationError

from lmdistill.data import IGNORE
from lmdistill.errors import UserError
from lmdistill.teachers import ModelOutputs, Request, response_positions
from lmdistill.teachers.capture import attention_logits
from lmdistill.objectives.attention import AttentionParams, AttentionTransfer, head_map

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- the loss, from the definitions -------------------------------------------------------------------------------

def softmax(xs):
    top = max(x.detach() for x in xs)
    e = [torch.exp(x - top) for x in xs]
    total = sum(e)
    return [v / total for v in e]


def kl(p, q):
    return sum(pi * torch.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def brute_force(s, t, attention_mask, labels, m, relation_heads, attention_weight, value_weight):
    """Sum over response rows of mean-over-heads KL, loops over rows, keys and heads. s, t: dicts with q [B, H, L, d],
    k [B, kv, L, d] (query head j reads kv head j // (H / kv), as Hugging Face's repeat_kv) and v [B, L, width]."""
    batch, length = labels.shape
    total = 0.0
    for b in range(batch):
        for row in range(length - 1):
            if labels[b, row + 1] == IGNORE:
                continue
            keys = [key for key in range(row + 1) if attention_mask[b, key]]

            def attention(x, head):
                n_heads, n_kv, d = x["q"].shape[1], x["k"].shape[1], x["q"].shape[-1]
                kv = head // (n_heads // n_kv)
                return softmax([x["q"][b, head, row] @ x["k"][b, kv, key] / math.sqrt(d) for key in keys])

            def relation(v, r):
                d = v.shape[-1] // relation_heads
                part = slice(r * d, (r + 1) * d)
                return softmax([v[b, row, part] @ v[b, key, part] / math.sqrt(d) for key in keys])

            if attention_weight:
                teacher = [attention(t, j) for j in range(t["q"].shape[1])]
                at = 0.0
                for h in range(s["q"].shape[1]):
                    target = [sum(m[h, j] * teacher[j][i] for j in range(len(teacher))) for i in range(len(keys))]
                    at = at + kl(target, attention(s, h))
                total = total + attention_weight * at / s["q"].shape[1]
            if value_weight:
                vr = sum(kl(relation(t["v"], r), relation(s["v"], r)) for r in range(relation_heads))
                total = total + value_weight * vr / relation_heads
    return total


def batch_with_padding_and_prompts(seed=0, batch=3, length=7):
    """Right-padded rows of lengths 7, 5, 4 with prompts of 2, 3, 1 tokens."""
    g = torch.Generator().manual_seed(seed)
    attention_mask = torch.zeros(batch, length, dtype=torch.long)
    labels = torch.full((batch, length), IGNORE)
    for b, (n, prompt) in enumerate([(7, 2), (5, 3), (4, 1)][:batch]):
        attention_mask[b, :n] = 1
        labels[b, prompt:n] = torch.randint(0, 50, (n - prompt,), generator=g)
    return attention_mask, labels


def random_side(g, batch, length, heads, kv, d, width, scale=1.5):
    return {"q": torch.randn(batch, heads, length, d, generator=g, dtype=torch.float64) * scale,
            "k": torch.randn(batch, kv, length, d, generator=g, dtype=torch.float64) * scale,
            "v": torch.randn(batch, length, width, generator=g, dtype=torch.float64) * scale}


def sdpa_style_mask(attention_mask):
    """[B, 1, L, L] bool (True = attend): causal and key padding, as Hugging Face builds for sdpa."""
    length = attention_mask.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    return (causal[None] & attention_mask.bool()[:, None, :]).unsqueeze(1)


def outputs(side, attention_mask, labels, layer):
    where = response_positions(labels)
    d = side["q"].shape[-1]
    logits = attention_logits(side["q"], side["k"], sdpa_style_mask(attention_mask), d ** -0.5, where)
    n = int(where.sum())
    return ModelOutputs(torch.zeros(n, 3, dtype=torch.float64), labels[:, 1:][where], attentions={layer: logits},
                        values={layer: side["v"]}, where=where, attention_mask=attention_mask)


def model_config(layers, heads, kv, head_dim):
    return SimpleNamespace(num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
                           head_dim=head_dim, hidden_size=heads * head_dim)


def context(teacher=(2, 3, 1, 6), student=(2, 2, 2, 4)):
    return SimpleNamespace(teacher_config=model_config(*teacher), student_config=model_config(*student), vocab_size=3)


def test_head_map_by_hand():
    torch.testing.assert_close(head_map(2, 3), torch.tensor([[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]],
                                                            dtype=torch.float64))
    torch.testing.assert_close(head_map(2, 4), torch.tensor([[.5, .5, 0, 0], [0, 0, .5, .5]], dtype=torch.float64))
    torch.testing.assert_close(head_map(4, 4), torch.eye(4, dtype=torch.float64))
    m = head_map(4, 9)  # SmolLM2-135M's 9 heads to a 4-head student
    torch.testing.assert_close(m[0], torch.tensor([4, 4, 1, 0, 0, 0, 0, 0, 0], dtype=torch.float64) / 9)
    torch.testing.assert_close(m.sum(1), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(m.sum(0), torch.full((9,), 4 / 9, dtype=torch.float64))  # every teacher head counts


@pytest.mark.numerical
@pytest.mark.parametrize("relations,attention_weight,value_weight", [
    (["attention", "value"], 1.0, 1.0), (["attention", "value"], 0.5, 2.0), (["attention"], 1.0, 1.0),
    (["value"], 1.0, 0.7)])
def test_value_and_gradient_match_brute_force(relations, attention_weight, value_weight):
    """3 teacher heads (1 kv head, width 6) -> 2 student heads (2 kv heads, width 8), two layer pairs weighted 1:3,
    padding and prompts masked."""
    g = torch.Generator().manual_seed(1)
    attention_mask, labels = batch_with_padding_and_prompts()
    params = AttentionParams(layers=[[1, 1], [2, 2]], pair_weights=[1.0, 3.0], relations=relations,
                             attention_weight=attention_weight, value_weight=value_weight)
    objective = AttentionTransfer(params, context())
    assert objective.relation_heads == (2 if "value" in relations else None)
    aw = attention_weight if "attention" in relations else 0.0
    vw = value_weight if "value" in relations else 0.0
    want, got = 0.0, 0.0
    students, leaves = [], []
    for layer, factor in ((1, 0.25), (2, 0.75)):
        s, t = random_side(g, 3, 7, 2, 2, 4, 8), random_side(g, 3, 7, 3, 1, 6, 6)
        s = {k: v.requires_grad_(True) for k, v in s.items()}
        t["q"].requires_grad_(True)
        students.append((outputs(s, attention_mask, labels, layer), outputs(t, attention_mask, labels, layer)))
        leaves.append((s, t))
        want = want + factor * brute_force(s, t, attention_mask, labels, head_map(2, 3), 2, aw, vw)
    student = ModelOutputs(students[0][0].logits, students[0][0].targets,
                           attentions={1: students[0][0].attentions[1], 2: students[1][0].attentions[2]},
                           values={1: students[0][0].values[1], 2: students[1][0].values[2]},
                           where=students[0][0].where, attention_mask=attention_mask)
    teacher = ModelOutputs(students[0][1].logits, students[0][1].targets,
                           attentions={1: students[0][1].attentions[1], 2: students[1][1].attentions[2]},
                           values={1: students[0][1].values[1], 2: students[1][1].values[2]})
    got = objective.loss(student, teacher, batch={})
    wrt = [s[name] for s, _ in leaves for name in ("q", "k", "v")]
    want_grads = torch.autograd.grad(want, wrt, allow_unused=True, retain_graph=True)
    got_grads = torch.autograd.grad(got, wrt, allow_unused=True)
    torch.testing.assert_close(got.detach(), want.detach(), rtol=1e-10, atol=1e-12)
    assert want.item() > 0
    for g_got, g_want in zip(got_grads, want_grads):
        if g_want is None:
            assert g_got is None or not g_got.any()
        else:
            torch.testing.assert_close(g_got, g_want, rtol=1e-9, atol=1e-12)
    assert all(t["q"].grad is None for _, t in leaves)  # the teacher is detached
    needs = objective.needs()
    assert needs.student.hidden == needs.teacher.hidden == ()  # no hidden states needed
    assert needs.student.attention == ((1, 2) if "attention" in relations else ())
    assert needs.teacher.values == ((1, 2) if "value" in relations else ())


@pytest.mark.numerical
def test_masks_in_every_form_give_the_same_logits_and_hidden_keys_never_make_nan():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(2, 4, 6, 8, generator=g) * 30, torch.randn(2, 2, 6, 8, generator=g) * 30  # near one-hot rows
    labels = torch.randint(0, 9, (2, 6))
    labels[:, :2] = IGNORE
    where = response_positions(labels)
    causal = sdpa_style_mask(torch.ones(2, 6, dtype=torch.long))
    additive = torch.zeros(causal.shape).masked_fill(~causal, torch.finfo(torch.float32).min)
    forms = [attention_logits(q, k, mask, 8 ** -0.5, where) for mask in (None, causal, additive)]
    torch.testing.assert_close(forms[0], forms[1], rtol=0, atol=0)
    torch.testing.assert_close(forms[0], forms[2], rtol=0, atol=0)
    first = forms[0][0]  # row (0, 1), the first that predicts a response token: keys 0 and 1 only
    assert torch.isneginf(first[:, 2:]).all() and torch.isfinite(first[:, :2]).all()
    objective = AttentionTransfer(AttentionParams(), context(teacher=(2, 4, 2, 8), student=(2, 4, 2, 8)))
    sq = q.flip(1).clone().requires_grad_(True)
    student = ModelOutputs(torch.zeros(int(where.sum()), 3), labels[:, 1:][where],
                           attentions={2: attention_logits(sq, k, None, 8 ** -0.5, where)},
                           values={2: torch.randn(2, 6, 16, generator=g) * 30}, where=where,
                           attention_mask=torch.ones(2, 6, dtype=torch.long))
    teacher = ModelOutputs(student.logits, student.targets, attentions={2: forms[0]},
                           values={2: torch.randn(2, 6, 16, generator=g) * 30})
    loss = objective.loss(student, teacher, {})
    loss.backward()
    assert torch.isfinite(loss) and loss > 0 and torch.isfinite(sq.grad).all()
    same = ModelOutputs(student.logits, student.targets, attentions=student.attentions, values=student.values)
    # a student equal to its teacher loses nothing: one head per head (no mixing), the same log-softmaxes of the same
    # tensors on both sides, so every term is p (log p - log p) = 0 exactly
    assert objective.loss(student, same, {}).item() == 0.0


# ---- config ---------------------------------------------------------------------------------------------------

def test_config_mistakes_are_one_line_errors(tmp_path, word_data):
    from conftest import tiny_config
    from lmdistill.config import build_config

    def error(entry):
        with pytest.raises(UserError) as e:
            build_config(tiny_config(tmp_path, word_data, objectives=[entry]))
        assert "\n" not in str(e.value)
        return str(e.value)

    assert "unknown key 'objectives[0].head_map'" in error({"name": "attention", "head_map": "mean"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        AttentionParams(temperature=2.0)
    assert "embeddings" in error({"name": "attention", "layers": [[0, 1]]})
    assert "relations" in error({"name": "attention", "relations": ["attention", "key"]})
    assert "at most once" in error({"name": "attention", "relations": ["value", "value"]})
    assert "weight 0" in error({"name": "attention", "relations": ["value"], "value_weight": 0})
    assert "relation_heads" in error({"name": "attention", "relation_heads": 0})
    config = build_config(tiny_config(tmp_path, word_data, objectives=[{"name": "attention"}]))
    assert config.objectives[0].layers == "last" and config.objectives[0].relations == ["attention", "value"]


def test_relation_heads_must_divide_both_value_widths():
    smol = (30, 9, 3, 64)  # SmolLM2-135M: value width 3 x 64 = 192
    objective = AttentionTransfer(AttentionParams(), context(teacher=smol, student=(2, 2, 2, 32)))
    assert objective.relation_heads == 2
    with pytest.raises(UserError) as e:
        AttentionTransfer(AttentionParams(relation_heads=3), context(teacher=smol, student=(2, 2, 2, 32)))
    assert str(e.value) == ("objective attention: relation_heads 3 does not divide both value widths (student 64, "
                            "teacher 192); set relation_heads to a common divisor: 1, 2, 4, 8, 16, 32, 64")
    with pytest.raises(UserError, match=r"default relation_heads \(the student's 3 heads\).*divisor: 1, 2, 4$"):
        AttentionTransfer(AttentionParams(), context(teacher=(2, 2, 2, 4), student=(2, 3, 3, 4)))
    # attention alone needs no relation heads
    assert AttentionTransfer(AttentionParams(relations=["attention"]),
                             context(teacher=(2, 2, 2, 4), student=(2, 3, 3, 4))).relation_heads is None
    with pytest.raises(UserError, match="teacher layer 31 does not exist"):
        AttentionTransfer(AttentionParams(layers=[[31, 2]]), context(teacher=smol, student=(2, 2, 2, 32)))


def test_the_teacher_cache_is_refused_before_any_model_loads(tmp_path, word_data, monkeypatch):
    from conftest import tiny_config
    from lmdistill import run
    from lmdistill.config import build_config
    from lmdistill.teachers.cached import CachedTeacher
    monkeypatch.setattr(run, "build_parts", lambda *a, **k: pytest.fail("models were loaded"))
    config = build_config(tiny_config(tmp_path / "run", word_data, objectives=[{"name": "attention"}],
                                      teacher_cache={"dir": str(tmp_path / "cache")}))
    with pytest.raises(UserError) as e:
        run.train(config, log=lambda *_: None)
    assert str(e.value) == ("objective 'attention': the teacher cache stores no attention logits or value "
                            "projections; remove teacher_cache or the attention objective")
    with pytest.raises(UserError, match="remove teacher_cache"):
        CachedTeacher(None, None)({}, Request(attention=(1,)))


# ---- a real run (needs the training loop to pass attention_layers / value_layers) ------------------------------

@pytest.mark.e2e
def test_a_real_run_on_the_smollm2_teacher_logs_the_attention_component(tmp_path, word_data):
    """SmolLM2-135M teacher (9 heads, 3 kv heads, value width 192) -> the 2-layer, 2-head tiny student (width 64)."""
    from conftest import tiny_config
    from lmdistill.config import build_config
    from lmdistill.run import train
    objectives = [{"name": "ce", "weight": 0.5}, {"name": "attention", "weight": 1.0, "layers": [[15, 1], [30, 2]]}]
    train(build_config(tiny_config(tmp_path, word_data, objectives=objectives)), log=lambda *_: None)
    steps = [json.loads(line) for line in open(tmp_path / "metrics.jsonl") if '"train"' in line]
    assert len(steps) == 6 and all(math.isfinite(r["attention"]) and r["attention"] > 0 for r in steps)
    assert steps[-1]["attention"] < steps[0]["attention"] and steps[-1]["loss"] < steps[0]["loss"]
