"""Benchmark commands: each prints Markdown tables (and writes them as JSON with ``-o``); none is a test.

Run as ``python -m blogrr_nnu.benchmarks.<name> --help``: ``preprocessing``, ``training``, ``prediction``.
See docs/performance.md for what each measures and how.
"""
