"""Benchmarks, in two homes; none is a test.

- ``blogrr_nnu.benchmarks.speed``: how fast and how much memory (preprocessing, a training iteration against stock
  nnU-Net's, sliding-window prediction, the GPU check). Each is ``python -m blogrr_nnu.benchmarks.speed.<name>``,
  prints Markdown tables and writes them as JSON with ``-o``; docs/performance.md says what each measures.
- ``blogrr_nnu.benchmarks.methods``: how good (``blogrr_benchmark``: every method on a dataset's test cases,
  thresholds, oracles, the page; docs/benchmark.md).

``blogrr_nnu.benchmarks.common`` is what both share: fresh child processes, peak memory, the machine, tables, JSON.
"""
