"""The tasks of the sim2real demonstration (benchmarks/sim2real_finetune.py --task NAME): what is
trained, which hidden physics the "real robot" stand-in has, and how the DR and sysid arms see it.

One profile per task; the demonstration's steps are the same for every task. docs/sim2real.md says
why each stand-in is what it is and what each task measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TaskProfile:
    name: str  # --task
    title: str  # the task in figure titles
    env_id: str
    action_repeat: int
    control_period_s: float  # seconds of robot time per agent step, action repeat included (the robot clock)
    stand_in: dict  # the stand-in robot's hidden physics, latency and noise (a DomainRandomization dict)
    sim_configs: dict[str, str]  # agent -> the sim policy's config; the first is the task's default agent
    arms_agent: str  # the DR and sysid arms' algorithm: they run by default only when --agent is this one
    dr_config: str  # the domain-randomization arm's config (its ranges contain the stand-in)
    sysid_config: str  # `rlcontrol sysid --config` for a recording of the sim policy on the stand-in
    sim_steps: int  # env steps of the sim policy and of the sysid arm
    finetune_s: float  # wall seconds of live fine-tuning (robot seconds / real_time_factor)
    real_time_factor: float
    learning_starts: int = 1000  # `rlcontrol finetune --learning-starts`: robot transitions before the first update
    export_every: int = 500  # `rlcontrol finetune --export-every`: updates between pushed versions
    default_out: dict[str, str] = field(default_factory=dict)  # agent -> run folder
    default_name: dict[str, str] = field(default_factory=dict)  # agent -> results/figure name

    @property
    def agents(self) -> tuple[str, ...]:
        return tuple(self.sim_configs)

    @property
    def default_agent(self) -> str:
        return self.agents[0]

    def out(self, agent: str) -> str:
        return self.default_out.get(agent, f"runs/sim2real-{self.name}-{agent}")

    def result_name(self, agent: str) -> str:
        return self.default_name.get(agent, f"sim2real_finetune_{self.name}_{agent}")


CARTPOLE = TaskProfile(
    name="cartpole", title="cartpole-balance", env_id="dmc:cartpole-balance", action_repeat=4, control_period_s=0.04,
    # a motor 5x weaker and a cart and pole twice as heavy as the model
    stand_in={"physics": {"actuator_gain": [0.2, 0.2], "mass": [2.0, 2.0]}},
    sim_configs={"td3": "configs/td3_cartpole_balance.yaml", "sac": "configs/sac_cartpole_balance.yaml"},
    arms_agent="td3", dr_config="configs/td3_cartpole_balance_dr.yaml",
    sysid_config="configs/sysid_cartpole_balance.yaml", sim_steps=120000, finetune_s=240.0, real_time_factor=4.0,
    default_out={"td3": "runs/sim2real", "sac": "runs/sim2real-sac"},
    default_name={"td3": "sim2real_finetune", "sac": "sim2real_finetune_sac"},
)

WALKER = TaskProfile(
    name="walker", title="walker-stand", env_id="dmc:walker-stand", action_repeat=2, control_period_s=0.05,
    # heavier, weaker motors, half the floor friction and one control step (50 ms) late
    stand_in={"physics": {"mass": [1.4, 1.4], "friction": [0.5, 0.5], "actuator_gain": [0.7, 0.7]},
              "latency_steps": [1, 1]},
    sim_configs={"sac": "configs/sac_walker_stand.yaml"},
    arms_agent="sac", dr_config="configs/sac_walker_stand_dr.yaml",
    sysid_config="configs/sysid_walker_stand.yaml", sim_steps=40000,
    # 30 minutes of robot time at real-time factor 2: the learner's SAC updates (2 x 256 networks, one
    # thread) cannot keep 2 updates per transition at 4x real time on this CPU
    finetune_s=900.0, real_time_factor=2.0, export_every=1000,
    default_out={"sac": "runs/sim2real-walker"}, default_name={"sac": "sim2real_finetune_walker"},
)

TASKS: dict[str, TaskProfile] = {p.name: p for p in (CARTPOLE, WALKER)}
