"""Named objective lists: `objectives: flexkd` in a config expands to the list below (the resolved config
shows the expansion). Feature-loss weights are not given by the Flex-KD papers; 1.0 is our default.

DistillLens's total loss is (1 - kd_ratio) CE + kd_ratio (KD + lambda_lens * lens). `distillens` is its shipped
config: kd_ratio 1 (no CE), reverse KL on the final logits, lambda_lens 1. `distillens+ce` keeps half CE
(kd_ratio 0.5) like the `kd` baseline here and the KD baselines of its own repository, for like-for-like
comparisons."""
from lmdistill.errors import UserError, did_you_mean

PRESETS = {
    "sft": [{"name": "ce", "weight": 1.0}],
    "kd": [{"name": "ce", "weight": 0.5}, {"name": "logit_kd", "weight": 0.5, "divergence": "forward_kl"}],
    "flexkd": [{"name": "ce", "weight": 1.0},
               {"name": "feature", "weight": 1.0, "selector": "flexkd", "metric": "pearson"}],
    "flexkd+kd": [{"name": "ce", "weight": 0.5}, {"name": "logit_kd", "weight": 0.5, "divergence": "forward_kl"},
                  {"name": "feature", "weight": 1.0, "selector": "flexkd", "metric": "pearson"}],
    "projection": [{"name": "ce", "weight": 1.0},
                   {"name": "feature", "weight": 1.0, "selector": "projection", "metric": "mse"}],
    "distillens": [{"name": "logit_kd", "weight": 1.0, "divergence": "reverse_kl"}, {"name": "lens", "weight": 1.0}],
    "distillens+ce": [{"name": "ce", "weight": 0.5}, {"name": "logit_kd", "weight": 0.5, "divergence": "reverse_kl"},
                      {"name": "lens", "weight": 0.5}],
    "cka": [{"name": "ce", "weight": 1.0}, {"name": "feature", "weight": 1.0, "selector": "none", "metric": "cka"}],
}


def expand_preset(name):
    if name not in PRESETS:
        raise UserError(f"unknown objectives preset '{name}'{did_you_mean(name, PRESETS)}; "
                        f"choose from {', '.join(PRESETS)} or give a list of objectives")
    return [dict(entry) for entry in PRESETS[name]]
