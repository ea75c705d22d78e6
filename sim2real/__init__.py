"""Sim-to-real tools (docs/sim2real.md).

- `sim2real.physics`: named physical parameters of a task (mass, friction, damping,
  actuator_gain, gravity; steering_gain, speed_time_constant for lane following) as scale
  factors of its nominal model: `supported_params`, `get_params`, `set_params`, `restore_nominal`.
- `sim2real.randomization`: `DomainRandomization` (the `env.randomization` config section) and
  `RandomizedEnv`, which draws every episode's world from its reset seed.
- `sim2real.stand_in`: `StandIn`, the hidden world of the simulated "real robot" (`--stand-in`):
  domain randomization plus task keywords only that robot applies, and named `PRESETS` (lane-car).

- `sim2real.sysid`: fit those parameters (and an actuation latency) to a recorded bag
  (`rlcontrol sysid BAG --config ... --out params.yaml`).
- `sim2real.finetune`: `LiveLearner`, the on-board learner of live fine-tuning
  (`ros_nodes/finetune_node.py`, `rlcontrol finetune`).
"""
