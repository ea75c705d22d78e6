"""benchmarks/sim2real_finetune.py --task: the task profiles (benchmarks/sim2real_tasks.py) and how the
demonstration's steps take their env, stand-in, configs and defaults from them (no ROS, no training)."""

import json

import pytest
import yaml

from benchmarks import sim2real_finetune as s2r
from benchmarks.sim2real_tasks import CARTPOLE, TASKS, WALKER
from sim2real.physics import MUJOCO_PARAMETERS
from sim2real.randomization import DomainRandomization


def test_cartpole_is_the_default_and_keeps_its_names_and_settings():
    args = s2r.parse_args([])
    assert (args.task, args.agent, args.finetune_s, args.rtf, args.sim_steps) == ("cartpole", "td3", 240.0, 4.0, 120000)
    assert args.out == (s2r.ROOT / "runs/sim2real").resolve() and args.name == "sim2real_finetune"
    assert args.skip_dr is False and args.skip_sysid is False  # TD3 is cartpole's arms agent
    sac = s2r.parse_args(["--agent", "sac"])
    assert sac.out == (s2r.ROOT / "runs/sim2real-sac").resolve() and sac.name == "sim2real_finetune_sac"
    assert sac.skip_dr is True and sac.skip_sysid is True
    assert (s2r.ENV_ID, s2r.ACTION_REPEAT) == ("dmc:cartpole-balance", 4)
    assert s2r.STAND_IN == {"physics": {"actuator_gain": [0.2, 0.2], "mass": [2.0, 2.0]}}
    assert (CARTPOLE.learning_starts, CARTPOLE.export_every) == (1000, 500)


def test_walker_task_selects_its_profile_and_sac():
    args = s2r.parse_args(["--task", "walker"])
    assert (args.agent, args.finetune_s, args.rtf, args.sim_steps) == ("sac", 900.0, 2.0, 40000)
    assert args.out == (s2r.ROOT / "runs/sim2real-walker").resolve() and args.name == "sim2real_finetune_walker"
    assert args.skip_dr is False and args.skip_sysid is False  # SAC is the walker's arms agent
    # robot time of a full session: 30 minutes at the default duration and real-time factor
    assert args.finetune_s * args.rtf == 30 * 60
    flags = s2r.parse_args(["--task", "walker", "--rtf", "4", "--finetune-s", "450", "--no-skip-dr", "--name", "x"])
    assert (flags.rtf, flags.finetune_s, flags.name) == (4.0, 450.0, "x")
    with pytest.raises(SystemExit):  # no TD3 sim config for the walker
        s2r.parse_args(["--task", "walker", "--agent", "td3"])
    with pytest.raises(SystemExit):
        s2r.parse_args(["--task", "humanoid"])


@pytest.mark.parametrize("task", list(TASKS.values()), ids=list(TASKS))
def test_every_config_of_a_profile_trains_or_fits_the_profiles_env(task):
    for agent, path in task.sim_configs.items():
        config = yaml.safe_load((s2r.ROOT / path).read_text())
        assert config["algo"] == agent and config["env"]["id"] == task.env_id
        assert config["env"].get("action_repeat", 1) == task.action_repeat
        assert not config["env"].get("randomization"), "the sim policy trains on the nominal model"
    assert task.arms_agent in task.sim_configs  # the sysid arm trains the arms agent's sim config
    dr = yaml.safe_load((s2r.ROOT / task.dr_config).read_text())
    assert dr["env"]["id"] == task.env_id and dr["env"].get("action_repeat", 1) == task.action_repeat
    sysid = yaml.safe_load((s2r.ROOT / task.sysid_config).read_text())
    assert sysid["env"]["id"] == task.env_id and sysid["env"]["action_repeat"] == task.action_repeat
    assert set(sysid["params"]) <= set(MUJOCO_PARAMETERS)


@pytest.mark.parametrize("task", list(TASKS.values()), ids=list(TASKS))
def test_the_dr_ranges_and_sysid_candidates_contain_the_stand_in(task):
    stand_in = DomainRandomization.from_dict(task.stand_in)
    dr = DomainRandomization.from_dict(yaml.safe_load((s2r.ROOT / task.dr_config).read_text())["env"]["randomization"])
    for name, scale in stand_in.physics.items():
        assert scale.low == scale.high, "the stand-in's physics is fixed, not drawn"
        assert dr.physics[name].low <= scale.low <= dr.physics[name].high, name
    assert dr.latency_steps[0] <= stand_in.latency_steps[0] <= stand_in.latency_steps[1] <= dr.latency_steps[1]
    sysid = yaml.safe_load((s2r.ROOT / task.sysid_config).read_text())
    assert stand_in.latency_steps[0] in sysid["latency_steps"]


def test_the_walker_stand_in_changes_masses_friction_gains_and_latency():
    stand_in = DomainRandomization.from_dict(WALKER.stand_in)
    assert set(stand_in.physics) == {"mass", "friction", "actuator_gain"}
    assert stand_in.physics["mass"].low > 1 and stand_in.physics["friction"].low < 1
    assert stand_in.physics["actuator_gain"].low < 1 and stand_in.latency_steps[0] >= 1


@pytest.mark.parametrize("task", list(TASKS.values()), ids=list(TASKS))
def test_the_robot_clock_is_the_envs_control_period(task):
    assert s2r.control_period(task) == pytest.approx(task.control_period_s)


def test_stand_in_env_builds_the_profiles_env_with_its_hidden_physics():
    env = s2r.stand_in_env(0, WALKER.stand_in, WALKER)
    try:
        env.reset(seed=0)
        assert env.sampled["mass"] == 1.4 and env.sampled["latency_steps"] == 1
        assert env.spec.control_period == pytest.approx(0.05)
    finally:
        env.close()


def test_versions_are_evaluated_on_the_tasks_stand_in(tmp_path, monkeypatch):
    tuned = tmp_path / "finetune"
    tuned.mkdir()
    (tuned / "policy-v0001.onnx").write_bytes(b"weights")
    (tuned / "finetune.jsonl").write_text(json.dumps({"version": 1, "updates": 1000, "transitions": 2000, "wall_s": 30.0}))
    seen = []
    monkeypatch.setattr(s2r, "onnx_policy", lambda path: path.name)
    monkeypatch.setattr(s2r, "returns", lambda act, stand_in, task=None: seen.append((stand_in, task)) or [600.0])
    curve, _, _ = s2r.evaluate_versions(tmp_path, tuned, 1, [400.0], [900.0], WALKER.control_period_s, WALKER)
    assert seen == [(WALKER.stand_in, WALKER)]
    assert curve[1]["robot_s"] == 100.0 and curve[1]["gap_closed"] == pytest.approx(0.4)  # 2000 x 50 ms


def test_finetune_and_the_sysid_arm_run_on_the_tasks_stand_in(tmp_path, monkeypatch):
    calls = []

    def fake(*args, timeout=0):
        calls.append([str(a) for a in args])
        if args[0] == "sysid":
            (tmp_path / "sysid_params.yaml").write_text(yaml.safe_dump({"randomization": {"latency_steps": [1, 1]}}))
        return {"out": str(tmp_path / "finetune"), "episodes": []}

    monkeypatch.setattr(s2r, "rlcontrol", fake)
    monkeypatch.setattr(s2r, "train", lambda config, run_dir, *extra: calls.append(["train", str(config), *extra]) or run_dir)
    s2r.finetune(tmp_path, tmp_path / "sim", 900.0, 2.0, ["--exploration-std", "0.2"], task=WALKER)
    cmd = calls[-1]
    assert cmd[0] == "finetune" and json.loads(cmd[cmd.index("--stand-in") + 1]) == WALKER.stand_in
    assert cmd[cmd.index("--learning-starts") + 1] == "1000" and cmd[cmd.index("--export-every") + 1] == "1000"
    assert cmd[cmd.index("--real-time-factor") + 1] == "2.0" and cmd[-2:] == ["--exploration-std", "0.2"]
    s2r.sysid_run(tmp_path, tmp_path / "sim", 40000, WALKER)
    export, deploy, sysid, train = calls[-4:]
    assert export[:2] == ["export", str(tmp_path / "sim")]
    assert deploy[0] == "deploy" and json.loads(deploy[deploy.index("--stand-in") + 1]) == WALKER.stand_in
    assert sysid[sysid.index("--config") + 1].endswith(WALKER.sysid_config)
    assert train[1] == str(tmp_path / "sac_walker_stand_sysid.yaml") and train[2:] == ["--steps", 40000]
    config = yaml.safe_load((tmp_path / "sac_walker_stand_sysid.yaml").read_text())
    assert config["algo"] == "sac" and config["env"]["randomization"] == {"latency_steps": [1, 1]}


def test_a_repeated_walker_session_runs_on_the_walker_clock(tmp_path, monkeypatch):
    from benchmarks import sim2real_repeats as rep

    folder = tmp_path / "repeat-s1"
    folder.mkdir()
    means = {1: 600.0, 2: 900.0}
    rows = [{"version": v, "updates": 1000 * v, "transitions": 1000 + 1000 * v, "wall_s": 10.0 * v} for v in means]
    rows += [{"event": "push", "version": v} for v in means]
    (folder / "finetune.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for v in means:
        (folder / f"policy-v{v:04d}.onnx").write_bytes(f"weights {v}".encode())
    monkeypatch.setattr(s2r, "onnx_policy", lambda path: means[int(path.name[8:12])])
    monkeypatch.setattr(s2r, "returns", lambda mean, stand_in, task=None: [mean] * 10)
    tuned = {"policy_status": {"version": 2, "path": str(folder / "policy-v0002.onnx")},
             "learner_status": {"learner": {"updates": 2000, "transitions": 3000}}, "control_loop": {"swaps": 2}}
    row = rep.session_row(tmp_path, "repeat", 1, tuned, v0=[400.0] * 10, in_sim=[1000.0] * 10, task=WALKER)
    assert row["final_robot_s"] == 150.0  # 3000 transitions x 50 ms
    assert row["robot_s_to_gap_closed"] == {"0.5": 150.0, "0.9": None}  # v1: 33%, v2: 83%
    assert row["learner"]["updates"] == 2000 and row["control_loop"] == {"swaps": 2}
