"""Importers: public datasets in their own layouts -> our raw dataset format (docs/data_format.md).

- :mod:`~blogrr_nnu.importers.brats`: BraTS 2020/2021 (``_t1``, ``_t1ce``, ``_t2``, ``_flair``, ``_seg``) and
  BraTS 2023+ (``-t1n``, ``-t1c``, ``-t2w``, ``-t2f``, ``-seg``) case folders;
- :mod:`~blogrr_nnu.importers.healthy`: healthy scans found by file-name patterns (IXI, HCP presets),
  optionally resampled onto one grid and brain-extracted;
- :mod:`~blogrr_nnu.importers.reports`: reports from a folder of ``<case>.txt``, a CSV or a JSON file;
- :mod:`~blogrr_nnu.importers.assemble`: the split, the atomic write and the final verification.
"""
