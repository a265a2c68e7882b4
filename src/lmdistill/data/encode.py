"""Turn records into token ids: chat template when the tokenizer has one, loss on response tokens only."""
from dataclasses import dataclass

from lmdistill.errors import UserError


@dataclass
class Example:
    input_ids: list[int]   # prompt + response tokens
    n_prompt: int          # the first n_prompt tokens get no loss
    prompt: str
    response: str


@dataclass
class EncodeStats:
    total: int = 0
    truncated: int = 0     # response cut to fit max_length
    dropped: int = 0       # prompt alone filled max_length

    def summary(self, max_length):
        return (f"{self.total} examples, {self.truncated} responses truncated and {self.dropped} dropped "
                f"(prompt too long) at max_length {max_length}")


def uses_chat_template(tokenizer, cfg):
    return cfg.use_chat_template and bool(getattr(tokenizer, "chat_template", None))


def _messages(prompt, cfg):
    system = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt is not None else []
    return system + [{"role": "user", "content": prompt}]


def render(tokenizer, prompt, response, cfg):
    """(prompt text, response text): the response text is everything the model must learn to write."""
    if not uses_chat_template(tokenizer, cfg):
        return prompt + "\n", response + (tokenizer.eos_token or "")
    messages = _messages(prompt, cfg)
    prompt_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
    if not full.startswith(prompt_text):
        raise UserError("the tokenizer's chat template does not render the prompt as a prefix of the conversation; "
                        "set data.use_chat_template: false")
    return prompt_text, full[len(prompt_text):].rstrip()


def encode(records, tokenizer, cfg):
    """Encode records; returns (examples, stats). Responses that do not fit are truncated, and reported."""
    default_system = type(cfg).model_fields["system_prompt"].default
    no_template = cfg.use_chat_template and not uses_chat_template(tokenizer, cfg)
    if no_template and cfg.system_prompt not in (None, default_system):
        raise UserError("data.system_prompt is set but the teacher's tokenizer has no chat template to put it in; "
                        "remove data.system_prompt (prompts are then used as plain text)")
    rendered = [render(tokenizer, r["prompt"], r["response"], cfg) for r in records]
    chat = uses_chat_template(tokenizer, cfg)
    prompts = tokenizer([p for p, _ in rendered], add_special_tokens=not chat)["input_ids"]
    responses = tokenizer([r for _, r in rendered], add_special_tokens=False)["input_ids"]
    stats, examples = EncodeStats(total=len(records)), []
    for record, p, r in zip(records, prompts, responses):
        room = cfg.max_length - len(p)
        if room < 1:
            stats.dropped += 1
            continue
        if len(r) > room:
            stats.truncated += 1
            r = r[:room]
        examples.append(Example(p + r, len(p), record["prompt"], record["response"]))
    if not examples:
        raise UserError(f"no example fits in data.max_length {cfg.max_length}; raise it")
    return examples, stats
