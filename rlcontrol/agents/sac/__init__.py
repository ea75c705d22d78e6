"""SAC (Haarnoja et al. 2018)."""
