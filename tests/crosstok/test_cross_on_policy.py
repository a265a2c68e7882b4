"""On-policy training with a teacher that has another tokenizer (tiny random models with Gemma-3's and SmolLM2's
tokenizers): the student's text is encoded again for both, aligned, cut where an unended response's text ends, and
a run with a replay buffer resumes exactly."""
import pytest
import torch
from safetensors.torch import load_file

from lmdistill.config import build_config
from lmdistill.crosstok.encode import Side, encode_pairs
from lmdistill.errors import UserError
from lmdistill.responses.cross import PairedWriting, paired_example
from lmdistill.run import train

from crosstok.test_cross_run import cross_config, model_dirs  # noqa: F401 (fixture)

OBJECTIVES = [{"name": "ce"}, {"name": "uld", "weight": 0.5}, {"name": "gold", "weight": 0.5}]


def encoder_for(gemma, smol, cfg):
    return lambda records: encode_pairs(records, Side(gemma, None, "teacher"), Side(smol, None, "student"), cfg)


def test_written_text_is_encoded_for_both_and_an_unended_response_loses_its_end_marker(gemma, smol):
    from lmdistill.config import DataConfig
    cfg = DataConfig(use_chat_template=False, system_prompt=None, max_length=64)
    encoder = encoder_for(gemma, smol, cfg)
    dataset = paired_example(encoder([{"prompt": "Define: cat", "response": "a reference"}]), 0)
    text = " a small café cat 🐈"
    ids = smol(text, add_special_tokens=False)["input_ids"]
    writing = PairedWriting(encoder, smol, [smol.eos_token_id])
    ended, open_ = writing([dataset, dataset], [ids + [smol.eos_token_id], ids])
    for e, end in ((ended, True), (open_, False)):
        student = smol.decode(e.input_ids[e.n_prompt:])
        teacher = gemma.decode(e.teacher.input_ids[e.teacher.n_prompt:])
        assert student.startswith(text.strip()) and teacher.startswith(text.strip())
        assert student.endswith(smol.eos_token) == end and teacher.endswith(gemma.eos_token) == end
        n_s, n_t = len(e.input_ids) - e.n_prompt, len(e.teacher.input_ids) - e.teacher.n_prompt
        assert e.groups and all(g[1] <= n_t and g[3] <= n_s for g in e.groups)
        assert e.input_ids[:e.n_prompt] == dataset.input_ids[:dataset.n_prompt]
    assert writing.refused == 0

    def refusing(records):
        raise UserError("the teacher's tokenizer does not reproduce the response")
    kept = PairedWriting(refusing, smol, [smol.eos_token_id])
    assert kept([dataset], [ids]) == [dataset] and kept.refused == 1


@pytest.mark.e2e
def test_a_cross_tokenizer_on_policy_run_with_replay_resumes_exactly(tmp_path, word_data, model_dirs):  # noqa: F811
    responses = {"source": "student", "max_new_tokens": 8, "adaptive": {"start": 1.0, "buffer_size": 8}}

    def config(name):
        c = cross_config(tmp_path / name, word_data, model_dirs, OBJECTIVES, train={"responses": responses})
        c["train"].update(steps=6, eval_every=3)
        return build_config(c)
    result = train(config("a"), log=lambda *_: None)
    assert result["metrics"]["student"]["bpb"] > 0
    assert train(config("b"), stop_at=4, log=lambda *_: None) is None  # the buffer is full by then: it replays
    train(config("b"), resume=True, log=lambda *_: None)
    a, b = (load_file(tmp_path / name / "run/student/model.safetensors") for name in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.e2e
def test_student_written_cross_batches_carry_their_own_encoding_for_the_teacher(tmp_path, word_data,
                                                                                 model_dirs, gemma, smol):  # noqa: F811
    from lmdistill.build import build_parts, wrap
    from lmdistill.run import make_accelerator
    from lmdistill.train.loop import Trainer
    c = cross_config(tmp_path, word_data, model_dirs, OBJECTIVES,
                     train={"responses": {"source": "student", "max_new_tokens": 8}})
    config = build_config(c)
    parts = build_parts(config)
    student, teacher = wrap(parts)
    trainer = Trainer(parts, student, teacher, make_accelerator(config), tmp_path, log=lambda *_: None)
    batch = trainer._micro_batches(0)[0]
    paired = batch["paired"]
    assert batch["index"].tolist() == list(range(len(paired.student)))
    for row, e, t in zip(batch["input_ids"], paired.student, paired.teacher):
        assert row[:len(e.input_ids)].tolist() == e.input_ids
        written = smol.decode(e.input_ids[e.n_prompt:], skip_special_tokens=True).strip()
        assert gemma.decode(t.input_ids[t.n_prompt:], skip_special_tokens=True).strip() == written
    out = teacher(batch, trainer.needs.teacher)
    assert out.alignment is not None and len(out.targets) == sum(len(t.input_ids) - t.n_prompt for t in paired.teacher)
