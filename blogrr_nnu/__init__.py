"""blogrr-nnu: unsupervised brain tumour segmentation (BLOGRR, CGC) as an nnU-Net-style pipeline.

Heavy dependencies (torch, nnunetv2) are imported by the modules that need them, not here, so that
``import blogrr_nnu`` and the command-line ``--help`` stay fast.
"""
__version__ = "0.1.0"
