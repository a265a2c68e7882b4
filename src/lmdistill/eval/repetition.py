"""Repetition in generated text, on whitespace-separated words so that students with different tokenizers are
measured alike: distinct-n (Li et al. 2016) over all generations, and the share that loop to the length limit."""

LOOP_N = 3  # a generation loops when the second half of its words adds no word 3-gram that its first half lacks


def ngrams(words, n):
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def distinct(texts, n):
    """Distinct word n-grams over all `texts` divided by their number (1.0: no n-gram repeats; 0.0: no n-grams)."""
    grams = [g for text in texts for g in ngrams(text.split(), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def loops(text, ended):
    """Whether a generation ran to the length limit (`ended` False: no end-of-text token) repeating itself: the
    second half of its words holds no word 3-gram that did not already occur earlier in the text."""
    words = text.split()
    if ended or len(words) < 2 * LOOP_N:
        return False
    grams = ngrams(words, LOOP_N)
    half = len(words) // 2
    earlier = set(grams[:half])  # a new gram in the second half would already end the loop, so this set suffices
    return all(gram in earlier for gram in grams[half:])


def repetition(texts, ended):
    """distinct-1, distinct-2 and the percentage of generations that loop to the length limit."""
    return {"distinct1": distinct(texts, 1), "distinct2": distinct(texts, 2),
            "loops": 100 * sum(loops(t, e) for t, e in zip(texts, ended)) / len(texts)}
