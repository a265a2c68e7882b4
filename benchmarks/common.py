"""Statistics shared by the benchmark scripts: mean ± std over seeds and paired differences."""
import statistics


def mean_std(values):
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0:.3f}"


def paired(by, name, reference, key, seeds):
    """mean ± std over seeds of by[(name, seed)][key] - by[(reference, seed)][key]: same init and data order."""
    return mean_std([by[(name, s)][key] - by[(reference, s)][key] for s in seeds])
