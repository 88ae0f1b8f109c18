"""Speed and memory benchmarks: ``python -m blogrr_nnu.benchmarks.speed.<name> --help`` (docs/performance.md)."""
