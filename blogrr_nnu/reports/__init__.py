"""Free-text radiology reports -> findings -> Hammers atlas regions -> pseudo-label masks."""
