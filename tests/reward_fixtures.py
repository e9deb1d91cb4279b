"""User rewards for tests, importable by name (module:function) in reward worker processes."""

import time


def hangs_on_marked_problem(samples):
    """1.0 for every sample, but never returns for the problem whose id is 'hang'."""
    if samples[0].example.get("id") == "hang":
        time.sleep(3600)
    return [1.0] * len(samples)


def raises_on_marked_problem(samples):
    if samples[0].example.get("id") == "raise":
        raise RuntimeError("boom")
    return [0.5] * len(samples)


def distinct_characters(samples):
    """Share of distinct characters in the completion: spread even for an untrained policy."""
    return [len(set(s.completion)) / max(1, len(s.completion)) for s in samples]
