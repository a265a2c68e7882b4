"""Where a result comes from: the code (git commit, and whether the tree had uncommitted changes), the library
versions, the machine, the command and the date. Written beside every benchmark and compare result, and into each
run's eval.json, so a number can be traced to the code that produced it. Also what a result was computed from and
with: fingerprints of models, tokenizers and encoded data (caches and selection artifacts are bound to them), and
the peak memory it took."""
import datetime
import hashlib
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

SOURCE_DIR = Path(__file__).resolve().parent  # the lmdistill package that is running
# Set by `lmdistill compare` for its cells' processes: the grid's directory, whose other cells are being written and
# are not uncommitted changes to the code (os.pathsep-separated paths).
RESULTS_DIR_ENV = "LMDISTILL_RESULTS_DIR"
KERNEL_SETTINGS = ("MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY", "MKL_CBWR", "OMP_NUM_THREADS")


def machine(device, processes=1):
    """Where a run's numbers and timings come from: float results differ in the last digits between CPU models,
    and timings are only comparable on one machine."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} x {processes}"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    kernels = torch.backends.cpu.get_cpu_capability()  # which vectorised kernels torch picked (AVX2, AVX512, ...)
    return f"{name} ({kernels}), {os.cpu_count()} CPUs" + (f", {processes} processes" if processes > 1 else "")


def kernels(device):
    """The kernels torch runs on this device: the CPU's vector instruction set, or the CUDA and cuDNN versions."""
    if device.type == "cuda":
        return {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                "capability": ".".join(map(str, torch.cuda.get_device_capability(device)))}
    # settings that move MKL's or PyTorch's kernels, and so the rounding of every result
    chosen = {name: os.environ[name] for name in KERNEL_SETTINGS if name in os.environ}
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(), **chosen}


def command_line():
    """The command that is running, to be written beside its results."""
    program = {"lmdistill": "lmdistill", "__main__.py": "python -m lmdistill"}.get(Path(sys.argv[0]).name, sys.argv[0])
    return " ".join(filter(None, [program, shlex.join(sys.argv[1:])]))


def _git(root, *args):
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)


def git_state(root=SOURCE_DIR, exclude=()):
    """The commit checked out at `root` and whether the tree is clean (`git status --porcelain` prints nothing).
    Paths under `exclude` (absolute or relative to the working directory, e.g. the result's own output directory,
    which the run is writing) do not make the tree dirty. Outside a git checkout (an installed wheel) commit and clean are None."""
    try:
        head = _git(root, "rev-parse", "HEAD")
        top = _git(root, "rev-parse", "--show-toplevel")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "clean": None, "note": "git not available"}
    if head.returncode or top.returncode:
        return {"commit": None, "clean": None, "note": f"{root} is not in a git checkout"}
    status = _git(root, "status", "--porcelain", "--untracked-files=all")
    top_dir = Path(top.stdout.strip())
    prefixes = []
    for path in exclude:  # relative to the working directory, or absolute
        try:
            prefixes.append(Path(path).resolve().relative_to(top_dir.resolve()).as_posix().rstrip("/") + "/")
        except ValueError:
            pass  # outside the repository: cannot make it dirty
    changed = []
    for line in status.stdout.splitlines():
        path = line[3:].split(" -> ")[-1].strip('"')
        if not any(path.startswith(p) for p in prefixes):
            changed.append(line)
    out = {"commit": head.stdout.strip(), "clean": status.returncode == 0 and not changed,
           "changed": changed[:100]}
    if len(changed) > 100:
        out["changed_more"] = len(changed) - 100
    if prefixes:
        out["not_counted"] = prefixes
    return out


def versions():
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "accelerate", "lmdistill"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def record(device=None, processes=1, exclude=()):
    """The provenance of a result made now by this process, as a JSON-ready dict."""
    device = torch.device("cpu") if device is None else torch.device(device)
    exclude = [*exclude, *filter(None, os.environ.get(RESULTS_DIR_ENV, "").split(os.pathsep))]
    return {"git": git_state(exclude=exclude), "versions": versions(),
            "machine": machine(device, processes), "kernels": kernels(device),
            "platform": platform.platform(), "command": command_line(), "cwd": os.getcwd(),
            "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def commit_text(git):
    """'abc1234567 (clean)' / 'abc1234567 (uncommitted changes: N paths)' / 'not recorded'."""
    if not git or not git.get("commit"):
        return "not recorded" + (f" ({git['note']})" if git and git.get("note") else "")
    count = len(git.get("changed", [])) + git.get("changed_more", 0)
    state = ("clean" if git["clean"] else f"uncommitted changes: {count} paths" if "changed" in git
             else "uncommitted changes")
    return f"{git['commit'][:10]} ({state})"


def summary(rec):
    """Markdown lines for a report's header."""
    v = rec["versions"]
    return (f"code: commit {commit_text(rec['git'])}  \n"
            f"versions: torch {v['torch']}, transformers {v['transformers']}, accelerate {v['accelerate']}, "
            f"python {v['python']}  \n"
            f"machine: {rec['machine']}; kernels: "
            + ", ".join(f"{k} {val}" for k, val in rec["kernels"].items()) + "  \n"
            f"command: `{rec['command']}`; date: {rec['date_utc']}")


def _status_gib(field):
    """A memory field of /proc/self/status (Linux) in GiB, or None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def rss_gib():
    """This process's resident memory now, in GiB (None off Linux)."""
    return _status_gib("VmRSS")


def reset_peak_memory(device=None):
    """Make peak_memory_gib count from now: the peak RSS restarts from the current RSS (Linux; elsewhere it keeps
    counting from the start of the process) and, on CUDA, the peak allocation from the current one."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device=None):
    """Peak resident memory of this process and, on CUDA, peak GPU allocation, in GiB, since the start of the process
    or the last reset_peak_memory. The one measure of memory every run, report and benchmark uses."""
    rss = _status_gib("VmHWM")
    if rss is None:  # no /proc: the process's peak from the kernel's accounting
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out = {"peak_rss_gib": round(rss, 3)}
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        out["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return out


def peak_memory_text(peak=None):
    """'1.53 GiB RSS' or '1.53 GiB RSS, 4.20 GiB GPU' (of peak_memory_gib's numbers, taken now by default)."""
    peak = peak or peak_memory_gib()
    return f"{peak['peak_rss_gib']:.2f} GiB RSS" + (f", {peak['peak_gpu_gib']:.2f} GiB GPU" if "peak_gpu_gib" in peak else "")


def model_fingerprint(model):
    """sha256 of the model's config (not its path) and a sample of every weight: a changed model or a
    fine-tuned copy gets a new fingerprint, without hashing gigabytes. A sharded model's weights are gathered one at a
    time (collective: every process must call it), so it gets the fingerprint it had whole."""
    h = hashlib.sha256()
    config = model.config.to_dict()
    config.pop("_name_or_path", None)
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, p in sorted(model.state_dict().items()):
        p = p.full_tensor() if hasattr(p, "full_tensor") else p  # a DTensor shard
        flat = p.detach().reshape(-1)
        sample = torch.cat([flat[:1024], flat[-1024:]]).float().cpu()
        h.update(f"{name}{tuple(p.shape)}".encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def tokenizer_fingerprint(tokenizer):
    """sha256 of the vocabulary, the special tokens and the chat template."""
    h = hashlib.sha256()
    h.update(json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode())
    h.update(json.dumps([tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id,
                         getattr(tokenizer, "chat_template", None)], default=str).encode())
    return h.hexdigest()[:16]


def data_fingerprint(examples):
    """sha256 of encoded examples: every token id and where each response starts."""
    h = hashlib.sha256()
    for e in examples:
        h.update(f"{e.n_prompt}:{','.join(map(str, e.input_ids))};".encode())
    return h.hexdigest()[:16]
