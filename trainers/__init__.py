"""blogrr_nnu.trainers: see DESIGN.md section 2."""
