"""The embedded BraTS-like demo dataset: phantoms on real anatomy (deepmriprep template + Hammers atlas).

Entry point: :func:`blogrr_nnu.phantom.dataset.make_demo_dataset` (CLI ``blogrr_make_demo_dataset``).
Modules: ``template`` (template-space brain model), ``anatomy`` (native grid, subject transform),
``contrast`` (T1/T2/FLAIR, confounders, bias, noise), ``lesion`` (tumour model), ``report_writer``
(reports from the ground truth), ``cases`` (one case), ``dataset`` (the raw dataset), ``montage``,
``baseline`` (best-global-threshold FLAIR Dice). See docs/demo_dataset.md.
"""
