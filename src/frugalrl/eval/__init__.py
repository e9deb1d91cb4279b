"""Evaluation: benchmarks, sampling, grading and statistics of a policy's accuracy and tokens."""
