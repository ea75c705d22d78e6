"""DDPG (Lillicrap et al. 2016)."""
