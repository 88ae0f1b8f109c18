"""The embedded BraTS-like demo dataset: phantoms on real anatomy (deepmriprep template + Hammers atlas)."""
