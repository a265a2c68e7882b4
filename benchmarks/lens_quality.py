"""How good is the teacher's logit lens at each layer, with and without the final norm? (the lens's final_norm default)

For each hidden_states index of the built-in teacher (SmolLM2-135M-Instruct), on dev examples of the built-in task, at
every response position: the lens distribution softmax(lm_head(h)) with final_norm (the model's final RMSNorm first)
and without (the raw residual stream, as DistillLens's reference code). Reports the CE of the next response token, the
entropy, KL(final distribution || lens), top-1 accuracy, and the mean norm of h. The last index is the model's output
(already normalised by Hugging Face), identical in both columns.

    .venv/bin/python benchmarks/lens_quality.py
"""
import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from common import header, provenance, write_provenance
from lmdistill.build import build_parts
from lmdistill.config import load_config
from lmdistill.data import in_batches
from lmdistill.teachers import Request, ResponseLM
from lmdistill.teachers.outputs import lens_input, output_head

LAYERS = (5, 10, 15, 20, 25, 30)


@torch.no_grad()
def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=64)
    p.add_argument("--out", default="benchmarks/results/lens_quality")
    args = p.parse_args()
    record = provenance(args.out)
    parts = build_parts(load_config("configs/demo.yaml"), splits=("dev",), log=lambda *_: None)
    teacher, head = parts.teacher.eval(), output_head(parts.teacher, parts.vocab_size)
    model = ResponseLM(teacher, parts.vocab_size)
    sums, tokens = {}, 0
    for batch in in_batches(parts.splits["dev"].examples[:args.examples], parts.tokenizer.pad_token_id, 16, "cpu"):
        out = model(batch["input_ids"], batch["attention_mask"], batch["labels"], Request(hidden=LAYERS))
        final = out.logits.float().log_softmax(-1)
        tokens += len(out.targets)
        for layer in LAYERS:
            for norm in (True, False):
                lens = head.fn(lens_input(teacher, out.hidden[layer], layer, norm)).float().log_softmax(-1)
                values = {"ce": F.nll_loss(lens, out.targets, reduction="sum"),
                          "entropy": -(lens.exp() * lens).sum(),
                          "kl": F.kl_div(lens, final, log_target=True, reduction="sum"),
                          "top1": 100 * (lens.argmax(-1) == out.targets).sum(),
                          "norm": out.hidden[layer].norm(dim=-1).sum()}
                for key, value in values.items():
                    sums[(layer, norm, key)] = sums.get((layer, norm, key), 0.0) + value.item()
    rows = [{"layer": layer, "final_norm": norm, "tokens": tokens,
             **{key: sums[(layer, norm, key)] / tokens for key in ("ce", "entropy", "kl", "top1", "norm")}}
            for layer in LAYERS for norm in (True, False)]
    lines = ["| hidden_states index | mean ‖h‖ | CE (norm / raw) | entropy (norm / raw) | KL(final ‖ lens) (norm / raw) "
             "| top-1 accuracy % (norm / raw) |", "|---|---|---|---|---|---|"]
    for layer in LAYERS:
        cell = {key: [sums[(layer, norm, key)] / tokens for norm in (True, False)] for key in ("ce", "entropy", "kl", "top1")}
        lines.append(f"| {layer} | {sums[(layer, True, 'norm')] / tokens:.0f} | "
                     + " | ".join(f"{a:.1f} / {b:.1f}" if key == "top1" else f"{a:.2f} / {b:.2f}"
                                for key, (a, b) in cell.items()) + " |")
    report = (header("The teacher's logit lens with and without the final norm", record)
              + f"SmolLM2-135M-Instruct (30 layers, final hidden state = index 30), {args.examples} dev examples of "
                f"define-word, {tokens} response tokens; nats per token; norm = final RMSNorm applied before the LM head "
                f"(lens final_norm: true), raw = the residual stream as is (final_norm: false). Unrounded numbers: rows.json.\n\n" + "\n".join(lines) + "\n")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    write_provenance(out / "provenance.json", record)
    (out / "README.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
