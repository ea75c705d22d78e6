"""Sim-to-real tools (docs/sim2real.md).

- `sim2real.physics`: named physical parameters of a task (mass, friction, damping,
  actuator_gain, gravity; steering_gain, speed_time_constant for lane following) as scale
  factors of its nominal model: `supported_params`, `get_params`, `set_params`, `restore_nominal`.
- `sim2real.randomization`: `DomainRandomization` (the `env.randomization` config section) and
  `RandomizedEnv`, which draws every episode's world from its reset seed.

System identification and live fine-tuning are still to come; they build on the same parameters.
"""
