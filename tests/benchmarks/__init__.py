"""Benchmarks, not tests: `make bench` (`python -m tests.benchmarks`) runs them all.

Nothing here asserts on speed. Every ratio is measured in one run, on one broker and on the same
inputs; `__main__` prints a Markdown table and writes `bench-results.json`.
"""
