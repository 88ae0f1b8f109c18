"""The method comparison behind ``blogrr_benchmark`` (docs/benchmark.md)."""
