"""`lmdistill info`: what a model is, without loading its weights."""
import torch

from lmdistill.layermap import uniform_pairs
from lmdistill.models.loading import model_config


def count_parameters(config):
    from transformers import AutoModelForCausalLM
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def describe(name, trust_remote_code=False):
    config = model_config(name, trust_remote_code=trust_remote_code)
    text = getattr(config, "get_text_config", lambda: config)()
    return {
        "model": name,
        "architecture": (config.architectures or [config.model_type])[0],
        "hidden_size": text.hidden_size,
        "layers": text.num_hidden_layers,
        "attention_heads": text.num_attention_heads,
        "kv_heads": getattr(text, "num_key_value_heads", text.num_attention_heads),
        "intermediate_size": getattr(text, "intermediate_size", None),
        "vocab_size": text.vocab_size,
        "tied_embeddings": getattr(config, "tie_word_embeddings", None),
        "max_positions": getattr(text, "max_position_embeddings", None),
        "parameters": f"{count_parameters(config) / 1e6:.1f}M",
    }


def layer_map_text(teacher_info, student_info, k):
    pairs = uniform_pairs(teacher_info["layers"], student_info["layers"], k)
    lines = [f"suggested layer map ({len(pairs)} uniform pairs, hidden_states indices, final layer excluded):",
             "  teacher: " + ", ".join(str(t) for t, _ in pairs),
             "  student: " + ", ".join(str(s) for _, s in pairs)]
    if teacher_info["vocab_size"] != student_info["vocab_size"]:
        lines.append(f"  note: vocab sizes differ ({teacher_info['vocab_size']} vs {student_info['vocab_size']}): "
                     "logit_kd, lens and dkd need one tokenizer; uld, gold and feature work across tokenizers")
    if teacher_info["hidden_size"] != student_info["hidden_size"]:
        lines.append(f"  note: hidden sizes differ ({teacher_info['hidden_size']} vs {student_info['hidden_size']}): "
                     "feature KD needs a selector or projection")
    return "\n".join(lines)
