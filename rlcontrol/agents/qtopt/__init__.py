"""QT-Opt (Kalashnikov et al. 2018): Q-learning with a CEM maximizer instead of an actor."""
