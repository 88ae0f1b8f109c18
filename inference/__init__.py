"""blogrr_nnu.inference: see DESIGN.md section 2."""
