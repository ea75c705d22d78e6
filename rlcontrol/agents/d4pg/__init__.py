"""D4PG (Barth-Maron et al. 2018): distributional critic, n-step returns, prioritized replay."""
