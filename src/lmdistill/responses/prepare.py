"""Setting up written responses for a run: the checks a user can act on, the training prompts that leave room for
a response, and the writer the trainer asks for each micro-batch."""
from dataclasses import replace

from lmdistill.errors import UserError
from lmdistill.responses.cross import PairedWriting
from lmdistill.responses.sampling import stop_ids
from lmdistill.responses.writer import StudentWriter, after_prompts


def check_responses(parts):
    """UserError for what train.responses asks and these models or data cannot give."""
    config = parts.config
    responses = config.train.responses
    if not responses.writes:
        return
    teacher_tokenizer = parts.teacher_tokenizer or parts.tokenizer
    if responses.teacher_writes and not stop_ids(teacher_tokenizer, config.data, config.teacher.use_chat_template):
        raise UserError("train.responses: the teacher's responses need a token that ends one, but the teacher's "
                        "tokenizer has no EOS token and its prompt format writes none; give the tokenizer an "
                        "eos_token, or use source: dataset")
    if responses.source != "student":
        return
    if not stop_ids(parts.tokenizer, config.data, student_chat(config, parts.cross_tokenizer)):
        raise UserError("train.responses.source: student needs a token that ends a response, but the student's "
                        "tokenizer has no EOS token and its prompt format writes none; give the tokenizer an "
                        "eos_token, or use source: dataset")
    if responses.adaptive is not None and "dev" not in parts.splits:
        raise UserError("train.responses.adaptive follows the dev CE, but the data has no dev split; add data.dev")


def fit_prompts(parts, log=print):
    """The parts with the training examples whose prompt leaves room for max_new_tokens in data.max_length (the
    others are dropped and counted)."""
    responses, max_length = parts.config.train.responses, parts.config.data.max_length
    if responses.source != "student":  # the teacher's responses are written once and truncated like references
        return parts
    split = parts.splits["train"]
    kept = [e for e in split.examples if e.n_prompt + responses.max_new_tokens <= max_length]
    if len(kept) < len(split.examples):
        log(f"train: {len(split.examples) - len(kept)} of {len(split.examples)} prompts leave less than "
            f"train.responses.max_new_tokens {responses.max_new_tokens} tokens of data.max_length {max_length} for a "
            f"response and are dropped")
    if not kept:
        raise UserError(f"no training prompt leaves room for train.responses.max_new_tokens "
                        f"{responses.max_new_tokens} in data.max_length {max_length}; lower one or raise the other")
    stats = replace(split.stats, dropped=split.stats.dropped + len(split.examples) - len(kept))
    return replace(parts, splits={**parts.splits, "train": replace(split, examples=kept, stats=stats)})


def describe(responses):
    """Where a run's training responses come from, in one line."""
    if responses.source == "dataset":
        return "the dataset's references"
    how = (f"sampled at temperature {responses.temperature}, top_p {responses.top_p}" if responses.do_sample
           else "greedy") + f", up to {responses.max_new_tokens} tokens"
    teacher = f"the teacher's responses ({how}" + (f"; {responses.references:.0%} references)" if responses.references
                                                   else ")")
    if responses.source == "teacher":
        return teacher
    off = teacher if responses.off_policy == "teacher" else "the dataset's references"
    if responses.adaptive is not None:
        a = responses.adaptive
        when = (f"with DistiLLM's adaptive probability (from {a.start}, +{a.rise} when the dev CE grows by "
                f"{a.tolerance}; replay buffer {a.buffer_size}, {a.replay} fresh share)")
    else:
        when = f"with probability {responses.lmbda}"
    return f"student-written {when}, {how}; otherwise {off}"


def student_chat(config, cross):
    """The student's use_chat_template (None: data's): its own with two tokenizers, the teacher's with one."""
    return config.student.use_chat_template if cross else config.teacher.use_chat_template


def make_writer(parts, accelerator):
    """The StudentWriter of a run whose student writes responses, else None."""
    config = parts.config
    if config.train.responses.source != "student":
        return None
    stop = stop_ids(parts.tokenizer, config.data, student_chat(config, parts.cross_tokenizer))
    make_examples = after_prompts
    if parts.cross_tokenizer:
        from lmdistill.crosstok.pair import pair_encoder
        make_examples = PairedWriting(pair_encoder(config, parts.teacher_tokenizer, parts.tokenizer), parts.tokenizer,
                                      stop)
    return StudentWriter(config.train.responses, config.seed, config.train.steps, parts.tokenizer.pad_token_id,
                         stop, accelerator.process_index, accelerator.device, make_examples)
