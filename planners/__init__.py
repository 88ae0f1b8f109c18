"""blogrr_nnu.planners: see DESIGN.md section 2."""
