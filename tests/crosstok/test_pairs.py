"""Paired encoding with the real Gemma-3 / SmolLM2 tokenizers, and the cross-tokenizer teacher feeding uld, gold
and feature on tiny random models with those vocabularies."""
import pytest
import torch

from lmdistill.config import DataConfig
from lmdistill.crosstok.encode import Side, encode_pairs
from lmdistill.data import collate
from lmdistill.errors import UserError

RECORDS = [{"prompt": "Define the word: naïve", "response": "naïve means 天真, without 😀👍🏽 guile"},
           {"prompt": "Say  two   spaces", "response": "a  b\t\tc\n\n d"},
           {"prompt": "Short", "response": "Yes."}]


def sides(gemma, smol, teacher_chat=None, student_chat=None):
    return Side(gemma, teacher_chat, "teacher"), Side(smol, student_chat, "student")


def response_bytes(example, table):
    return b"".join(table[i] or b"" for i in example.input_ids[example.n_prompt:])


def test_both_sides_hold_the_record_and_groups_cover_the_same_bytes(gemma, smol, gemma_bytes, smol_bytes):
    cfg = DataConfig(builtin=None, train="x.jsonl", max_length=128)
    paired = encode_pairs(RECORDS, *sides(gemma, smol), cfg)
    assert len(paired.teacher) == len(paired.student) == len(RECORDS)
    for record, t, s, groups in zip(RECORDS, paired.teacher, paired.student, paired.groups):
        # Gemma has no chat template: plain prompt, response then <eos>; SmolLM2's template ends with <|im_end|>
        assert t.input_ids[0] == gemma.bos_token_id and t.input_ids[-1] == gemma.eos_token_id
        assert response_bytes(t, gemma_bytes) == record["response"].encode()
        assert response_bytes(s, smol_bytes) == record["response"].encode()
        n_t, n_s = len(t.input_ids) - t.n_prompt, len(s.input_ids) - s.n_prompt
        assert groups[0][0] == 0 and groups[0][2] == 0 and groups[-1][1] == n_t and groups[-1][3] == n_s
        for (t0, t1, s0, s1), nxt in zip(groups, groups[1:]):
            assert (t1, s1) == (nxt[0], nxt[2])
            tb = b"".join(gemma_bytes[i] for i in t.input_ids[t.n_prompt + t0:t.n_prompt + t1])
            sb = b"".join(smol_bytes[i] for i in s.input_ids[s.n_prompt + s0:s.n_prompt + s1])
            assert tb == sb  # every group but the last (the two suffixes) covers the same text
    a = paired.alignment
    assert 0 < a.one_to_one <= a.aligned <= a.student_tokens == sum(len(s.input_ids) - s.n_prompt for s in paired.student)
    assert "student response tokens have an aligned teacher position" in paired.alignment_summary()


def test_truncation_keeps_only_groups_both_sides_hold(gemma, smol):
    cfg = DataConfig(builtin=None, train="x.jsonl", max_length=40)
    paired = encode_pairs(RECORDS, *sides(gemma, smol), cfg)
    for t, s, groups in zip(paired.teacher, paired.student, paired.groups):
        assert len(t.input_ids) <= 40 and len(s.input_ids) <= 40
        assert all(t1 <= len(t.input_ids) - t.n_prompt and s1 <= len(s.input_ids) - s.n_prompt
                   for _, t1, _, s1 in groups)
    assert paired.stats.truncated >= 1


def test_a_prompt_too_long_for_either_side_drops_the_example_on_both(gemma, smol):
    records = RECORDS + [{"prompt": "word " * 60, "response": "ok"}]
    paired = encode_pairs(records, *sides(gemma, smol), DataConfig(builtin=None, train="x.jsonl", max_length=48))
    assert paired.stats.dropped == 1 and len(paired.teacher) == len(paired.student) == len(paired.groups) == 3


def test_a_chat_template_that_rewrites_the_response_is_refused(gemma, smol):
    import copy
    odd = copy.deepcopy(smol)
    odd.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | upper }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(UserError, match="student's chat template does not keep the response verbatim.*"
                                        "student.use_chat_template: false"):
        encode_pairs(RECORDS, *sides(gemma, odd), DataConfig(builtin=None, train="x.jsonl"))


@pytest.mark.parametrize("response, side", [("a \u2581 b", "teacher"),  # Gemma reads U+2581 as a space
                                            ("say <eos> now", "teacher"),  # ... and <eos> as its control token
                                            ("say <|im_end|> now", "student")])
def test_a_response_a_tokenizer_does_not_spell_verbatim_is_refused(gemma, smol, response, side):
    records = RECORDS[:1] + [{"prompt": "Say it", "response": response}]
    with pytest.raises(UserError, match=f"the {side}'s tokenizer does not reproduce the response of record 2"):
        encode_pairs(records, *sides(gemma, smol), DataConfig(builtin=None, train="x.jsonl"))


def tiny_lm(vocab, hidden, layers, seed):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def pair_models():
    return tiny_lm(262144, 24, 2, 0), tiny_lm(49152, 16, 3, 1)


def context(teacher, student, gemma, smol):
    from lmdistill.build import ObjectiveContext
    from lmdistill.crosstok import shared_tokens
    teacher_ids, student_ids = shared_tokens(gemma, smol)
    return ObjectiveContext(teacher.config, student.config, len(smol), len(gemma), (student_ids, teacher_ids))


def build(name, ctx, **params):
    from lmdistill.objectives import OBJECTIVES
    cls = OBJECTIVES[name]
    return cls(cls.Params(name=name, **params), ctx)


def outputs(pair_models, gemma, smol, request_teacher=None, request_student=None):
    from lmdistill.teachers import Request, ResponseLM
    from lmdistill.teachers.cross_tokenizer import CrossTokenizerTeacher
    teacher_lm, student_lm = pair_models
    paired = encode_pairs(RECORDS, *sides(gemma, smol), DataConfig(builtin=None, train="x.jsonl", max_length=96))
    batch = {**collate(paired.student, smol.pad_token_id), "index": torch.arange(len(RECORDS))}
    teacher = CrossTokenizerTeacher(teacher_lm, len(gemma), gemma.pad_token_id, paired)
    s = ResponseLM(student_lm, len(smol))(batch["input_ids"], batch["attention_mask"], batch["labels"],
                                          request_student or Request())
    return s, teacher(batch, request_teacher or Request()), paired


def test_uld_from_the_cross_tokenizer_teacher_equals_uld_on_its_full_logits(pair_models, gemma, smol):
    """The teacher answers with final hidden states and an alignment; uld applies its head in chunks and gives
    what group_loss gives on the teacher's full logits."""
    from lmdistill.crosstok.uld import group_loss, uld_rows
    from lmdistill.teachers.outputs import lm_head_logits
    s, t, paired = outputs(pair_models, gemma, smol)
    assert t.logits is None and t.final.shape == (len(t.targets), 24)
    assert len(t.alignment.teacher.last) == sum(len(g) for g in paired.groups)
    objective = build("uld", context(*pair_models, gemma, smol), chunk_size=5)
    got = objective.loss(s, t, None)
    want = group_loss(uld_rows, s.logits, s.targets, t.alignment.student, lm_head_logits(t.lm, t.final), t.targets,
                      t.alignment.teacher, chunk_size=1000)
    assert torch.isfinite(got) and got > 0
    assert abs(got.item() - want.item()) <= 1e-5 * want.item()
    got.backward()
    assert pair_models[1].model.embed_tokens.weight.grad.abs().sum() > 0
    pair_models[1].zero_grad()


def test_gold_logs_the_teachers_mass_on_shared_tokens(pair_models, gemma, smol):
    s, t, _ = outputs(pair_models, gemma, smol)
    objective = build("gold", context(*pair_models, gemma, smol))
    value = objective.loss(s, t, None)
    assert torch.isfinite(value) and value > 0
    groups = len(t.alignment.teacher.last)
    # a random teacher spreads its mass evenly: about the shared share of its vocabulary on each group
    assert 0.05 * groups < objective.hybrid.shared_mass < 0.5 * groups
    mass, count = objective.take_stats()["shared_mass"]
    assert count == groups and objective.take_stats()["shared_mass"] == (0.0, 0)  # read, then reset


def test_feature_reads_the_aligned_positions(pair_models, gemma, smol):
    from lmdistill.features.metrics import mse
    from lmdistill.teachers import Request
    s, t, _ = outputs(pair_models, gemma, smol, Request(hidden=(2,)), Request(hidden=(3,)))
    assert len(t.alignment.student_starts) < len(s.targets)  # some student positions have no aligned teacher one
    objective = build("feature", context(*pair_models, gemma, smol), selector="projection", metric="mse",
                      layers=[[2, 3]])
    value = objective.loss(s, t, None)
    a = t.alignment
    projected = objective.projections[0](s.hidden[3][a.student_starts])
    want = mse(projected, t.hidden[2][a.teacher_starts]) * len(s.targets)
    assert abs(value.item() - want.item()) <= 1e-5 * want.item()


def test_gold_checks_its_divergence_and_fills_in_its_parameters():
    from lmdistill.objectives.uld import GoldParams
    assert GoldParams(name="gold").params == {"beta": 0.5}
    assert GoldParams(name="gold", divergence="forward_kl").params == {}
    with pytest.raises(ValueError, match="forward_kl has no parameter 'beta'"):
        GoldParams(name="gold", divergence="forward_kl", params={"beta": 0.1})
    with pytest.raises(ValueError, match="unknown divergence 'jsd'"):
        GoldParams(name="gold", divergence="jsd")
