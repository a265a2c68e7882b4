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


def uses_chat_template(tokenizer, cfg, chat=None):
    """Whether prompts are rendered with the tokenizer's chat template: `chat` (a model's own setting) or else
    data.use_chat_template asks for it, and the tokenizer has one."""
    wanted = cfg.use_chat_template if chat is None else chat
    return wanted and bool(getattr(tokenizer, "chat_template", None))


def _messages(prompt, cfg):
    system = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt is not None else []
    return system + [{"role": "user", "content": prompt}]


def render(tokenizer, prompt, response, cfg, chat=None):
    """(prompt text, response text): the response text is everything the model must learn to write."""
    if not uses_chat_template(tokenizer, cfg, chat):
        return prompt + "\n", response + (tokenizer.eos_token or "")
    messages = _messages(prompt, cfg)
    prompt_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
    if not full.startswith(prompt_text):
        raise UserError("the tokenizer's chat template does not render the prompt as a prefix of the conversation; "
                        "set data.use_chat_template: false")
    return prompt_text, full[len(prompt_text):].rstrip()


def check_system_prompt(tokenizer, cfg, chat=None, role="teacher"):
    default_system = type(cfg).model_fields["system_prompt"].default
    wanted = cfg.use_chat_template if chat is None else chat
    if wanted and not uses_chat_template(tokenizer, cfg, chat) and cfg.system_prompt not in (None, default_system):
        raise UserError(f"data.system_prompt is set but the {role}'s tokenizer has no chat template to put it in; "
                        f"remove data.system_prompt (prompts are then used as plain text)")


def tokenize(tokenizer, rendered, chat, offsets=False):
    """(prompt ids, response ids[, response offsets]) of rendered (prompt text, response text) pairs. A plain
    prompt gets the tokenizer's special tokens (e.g. BOS); a chat template writes its own."""
    prompts = tokenizer([p for p, _ in rendered], add_special_tokens=not chat)["input_ids"]
    responses = tokenizer([r for _, r in rendered], add_special_tokens=False, return_offsets_mapping=offsets)
    if offsets:
        return prompts, responses["input_ids"], responses["offset_mapping"]
    return prompts, responses["input_ids"]


def fit(prompt, response, max_length, stats):
    """(prompt, response) token lists cut to max_length (the response truncated), or None when the prompt alone
    fills it; counted in stats."""
    room = max_length - len(prompt)
    if room < 1:
        stats.dropped += 1
        return None
    if len(response) > room:
        stats.truncated += 1
        response = response[:room]
    return prompt, response


def encode(records, tokenizer, cfg, chat=None):
    """Encode records; returns (examples, stats). Responses that do not fit are truncated, and reported.
    chat: the model's own use_chat_template (None: data.use_chat_template)."""
    check_system_prompt(tokenizer, cfg, chat)
    rendered = [render(tokenizer, r["prompt"], r["response"], cfg, chat) for r in records]
    prompts, responses = tokenize(tokenizer, rendered, uses_chat_template(tokenizer, cfg, chat))
    stats, examples = EncodeStats(total=len(records)), []
    for record, p, r in zip(records, prompts, responses):
        kept = fit(p, r, cfg.max_length, stats)
        if kept is not None:
            examples.append(Example(kept[0] + kept[1], len(kept[0]), record["prompt"], record["response"]))
    if not examples:
        raise UserError(f"no example fits in data.max_length {cfg.max_length}; raise it")
    return examples, stats
