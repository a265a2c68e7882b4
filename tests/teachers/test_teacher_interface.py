"""The Teacher interface: objectives declare what they need as data, the loop asks each model for the union, and a
new kind of teacher is one subclass (no objective changes)."""
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lmdistill.build import ObjectiveContext, check_teacher
from lmdistill.config import Config
from lmdistill.errors import UserError
from lmdistill.objectives import OBJECTIVES, build_objectives
from lmdistill.objectives.needs import Needs, union
from lmdistill.teachers import OnlineTeacher, Request, ResponseLM, Teacher
from lmdistill.teachers.cached import CachedTeacher

VOCAB = 64


def tiny_llama(layers, hidden, seed):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


def batch(seed=0, size=3, length=9):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (size, length), generator=g)
    labels = ids.clone()
    labels[:, :4] = -100  # prompts
    mask = torch.ones_like(ids)
    mask[0, -2:] = 0  # padding
    labels[0, -2:] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "index": torch.arange(size)}


def objectives(entries, teacher, student):
    params = Config.model_validate({"objectives": entries}).objectives
    return build_objectives(params, ObjectiveContext(teacher.config, student.config, VOCAB))


ENTRIES = [{"name": "ce"}, {"name": "logit_kd"}, {"name": "lens", "layers": [[2, 1]]},
           {"name": "feature", "selector": "projection", "metric": "mse", "layers": [[3, 2]]},
           {"name": "uld"}, {"name": "gold"},
           {"name": "attention", "layers": [[1, 1], [4, 2]], "relations": ["attention"]}]


def test_requests_merge_sorted_and_without_repeats():
    merged = Request(hidden=(3, 1), values=(2,)) | Request(hidden=(1, 2), attention=(4,))
    assert merged == Request(hidden=(1, 2, 3), attention=(4,), values=(2,))


def test_each_objective_declares_what_it_reads():
    teacher, student = tiny_llama(4, 32, 0), tiny_llama(2, 16, 1)
    ce, kd, lens, feature, uld, gold, attention = (o.needs() for o in objectives(ENTRIES, teacher, student))
    assert uld == gold == Needs()  # logits only (with one tokenizer, every position is its own aligned group)
    assert ce == Needs(teacher=None)  # CE reads no teacher output
    assert kd == Needs()  # logits only
    assert lens == Needs(student=Request(hidden=(1,)), teacher=Request(hidden=(2,)))
    assert feature == Needs(student=Request(hidden=(2,)), teacher=Request(hidden=(3,)))
    assert attention == Needs(student=Request(attention=(1, 2)), teacher=Request(attention=(1, 4)))
    assert union([ce]).teacher is None
    assert union([ce, lens, feature, attention]) == Needs(student=Request(hidden=(1, 2), attention=(1, 2)),
                                                           teacher=Request(hidden=(2, 3), attention=(1, 4)))


def test_every_registered_objective_declares_needs_on_the_interface():
    # the loop reads needs() only; no objective keeps the old per-kind layer methods
    for cls in OBJECTIVES.values():
        for name in ("student_attention_layers", "teacher_value_layers", "needs_teacher", "teacher_cacheable"):
            assert not hasattr(cls, name), f"{cls.__name__}.{name}"


class RecordingTeacher(Teacher):
    """A new kind of teacher, as a user would add one: it answers through the online teacher and records requests."""
    kind = "recording"

    def __init__(self, model):
        self.online, self.lm, self.requests = OnlineTeacher(model, VOCAB), model, []

    def __call__(self, batch, request=Request()):
        self.requests.append(request)
        return self.online(batch, request)


def test_a_new_teacher_kind_serves_every_objective_unchanged():
    teacher, student = tiny_llama(4, 32, 0), tiny_llama(2, 16, 1)
    built = objectives(ENTRIES, teacher, student)
    needs = union(o.needs() for o in built)
    data = batch()
    s = ResponseLM(student, VOCAB)(data["input_ids"], data["attention_mask"], data["labels"], needs.student)
    recording = RecordingTeacher(teacher)
    with torch.no_grad():
        t_new, t_online = recording(data, needs.teacher), OnlineTeacher(teacher, VOCAB)(data, needs.teacher)
        got = [o.loss(s, t_new, data) for o in built]
        want = [o.loss(s, t_online, data) for o in built]
    assert recording.requests == [needs.teacher]
    assert all(torch.equal(a, b) for a, b in zip(got, want))  # the same computation, so exactly equal
    assert all(torch.isfinite(a) for a in got)


def test_the_training_loop_asks_each_model_for_the_union(monkeypatch):
    from lmdistill.train.loop import Trainer
    teacher, student = tiny_llama(4, 32, 0), tiny_llama(2, 16, 1)
    built = objectives(ENTRIES, teacher, student)
    recording = RecordingTeacher(teacher)
    trainer = SimpleNamespace(needs=union(o.needs() for o in built), train_teacher=recording)
    s, t = Trainer._forward(trainer, ResponseLM(student, VOCAB), batch())
    assert recording.requests == [trainer.needs.teacher]
    assert set(s.hidden) == {1, 2} and set(s.attentions) == {1, 2}
    assert set(t.hidden) == {2, 3} and set(t.attentions) == {1, 4}
    sft = SimpleNamespace(needs=union(o.needs() for o in built[:1]), train_teacher=recording)
    assert Trainer._forward(sft, ResponseLM(student, VOCAB), batch())[1] is None  # CE alone: the teacher never runs
    assert len(recording.requests) == 1


def test_a_teacher_kind_refuses_what_it_cannot_give_before_anything_runs():
    teacher, student = tiny_llama(4, 32, 0), tiny_llama(2, 16, 1)
    built = objectives(ENTRIES, teacher, student)
    check_teacher(OnlineTeacher, built)  # the online teacher answers any request
    check_teacher(CachedTeacher, built[:4])  # hidden states and logits: the cache holds them
    with pytest.raises(UserError) as e:
        check_teacher(CachedTeacher, built)
    assert str(e.value) == ("objective 'attention': the teacher cache stores no attention logits or value "
                            "projections; remove teacher_cache or the attention objective")
    assert CachedTeacher.refuses(Request(values=(1,))) and not CachedTeacher.refuses(Request(hidden=(1, 2)))


@pytest.mark.numerical
def test_with_one_tokenizer_gold_is_its_exact_divergence_and_uld_sorts_each_position():
    """Every position its own group and every token shared: gold is logit_kd with the same divergence, and uld is the
    sorted-probability L1 at each position."""
    from tolerance import worst
    teacher, student = tiny_llama(4, 32, 0), tiny_llama(2, 16, 1)
    gold, kd, uld = objectives([{"name": "gold"}, {"name": "logit_kd", "divergence": "generalized_jsd"},
                                {"name": "uld"}], teacher, student)
    data = batch()
    s = ResponseLM(student, VOCAB)(data["input_ids"], data["attention_mask"], data["labels"])
    with torch.no_grad():
        t = OnlineTeacher(teacher, VOCAB)(data)
        n = len(s.targets)
        assert abs(gold.loss(s, t, data) - kd.loss(s, t, data)) <= n * worst(4 * VOCAB, 1.0)
        q, p = s.logits.double().softmax(-1), t.logits.double().softmax(-1)
        want = (q.sort(-1, descending=True).values - p.sort(-1, descending=True).values).abs().sum()
        assert abs(uld.loss(s, t, data).item() - want.item()) <= n * worst(4 * VOCAB, 2.0)
