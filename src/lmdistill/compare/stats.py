"""Summary statistics for a seeds x methods grid: mean +/- sample std, and paired differences with a Student-t
95 % interval and two-sided p-value (differences are taken seed by seed, so shared seed noise cancels); Holm's
adjustment of a family of p-values."""
import math


def mean(xs):
    return sum(xs) / len(xs)


def std(xs):
    """Sample standard deviation (n - 1); 0 for a single value."""
    if len(xs) < 2:
        return 0.0
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def mean_std_text(values, fmt="{:.3f}"):
    """'m ± s' over the values, or the plain value when there is one."""
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(mean(values))} ± {fmt.format(std(values))}"


def t_cdf(t, df):
    """P(T <= t) for Student's t with df degrees of freedom, via the regularised incomplete beta function."""
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2, 0.5, x)
    return 1 - tail if t > 0 else tail


def t_quantile(p, df):
    """The p-quantile of Student's t (bisection on t_cdf; |error| < 1e-10)."""
    lo, hi = -1e4, 1e4
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _betainc(a, b, x):
    """Regularised incomplete beta I_x(a, b) by its continued fraction (Numerical Recipes' betacf)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1) / (a + b + 2):
        return 1 - _betainc(b, a, 1 - x)
    tiny, c, d = 1e-300, 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return front * h / a


def paired(values, reference, level=0.95):
    """Paired difference values - reference (lists over the same seeds): dict with mean, std, the t interval
    (None below 2 seeds), n, and how many seeds the difference is negative (the method lower) in."""
    if len(values) != len(reference) or not values:
        raise ValueError("paired differences need the same, non-empty list of seeds on both sides")
    diffs = [v - r for v, r in zip(values, reference)]
    n, m, s = len(diffs), mean(diffs), std(diffs)
    interval = p = None
    if n >= 2:
        half = t_quantile(0.5 + level / 2, n - 1) * s / math.sqrt(n)
        interval = (m - half, m + half)
        p = 2 * (1 - t_cdf(abs(m) / (s / math.sqrt(n)), n - 1)) if s > 0 else float(m == 0)
    return {"mean": m, "std": s, "interval": interval, "p": p, "n": n, "lower_in": sum(d < 0 for d in diffs),
            "diffs": diffs}


def holm(p_values):
    """Holm's step-down adjustment of a family of p-values (same order): the adjusted p-value of the i-th smallest is
    max over j <= i of min(1, (m - j + 1) p_(j)); rejecting where it is <= alpha keeps the family-wise error <= alpha."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [None] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
