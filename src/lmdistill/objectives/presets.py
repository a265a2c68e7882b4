"""Named objective lists: `objectives: flexkd` in a config expands to the list below (the resolved config
shows the expansion). Feature-loss weights are not given by the Flex-KD papers; 1.0 is our default."""
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
    "cka": [{"name": "ce", "weight": 1.0}, {"name": "feature", "weight": 1.0, "selector": "none", "metric": "cka"}],
}


def expand_preset(name):
    if name not in PRESETS:
        raise UserError(f"unknown objectives preset '{name}'{did_you_mean(name, PRESETS)}; "
                        f"choose from {', '.join(PRESETS)} or give a list of objectives")
    return [dict(entry) for entry in PRESETS[name]]
