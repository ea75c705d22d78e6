"""benchmarks/sample_efficiency.py and its SB3 peer (benchmarks/sb3_peer.py): threshold crossings, the gymnasium
adapter, a resumed SB3 run, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import envs
from benchmarks import sample_efficiency as se
from benchmarks import sb3_peer

ROOT = Path(__file__).resolve().parents[2]
TINY = ["agent.batch_size=32", "agent.actor_hidden=[32, 32]", "agent.critic_hidden=[32, 32]"]


def test_threshold_is_90_percent_of_curl_state_sac():
    assert se.threshold_for("cartpole_swingup") == pytest.approx(0.9 * 835)
    assert se.threshold_for("walker_walk") == pytest.approx(0.9 * 891)


def test_first_crossing_takes_the_first_evaluation_at_or_above_the_threshold():
    curve = [(30_000, 90.0, 760.0), (10_000, 30.0, 200.0), (20_000, 60.0, 751.5), (40_000, 120.0, 700.0)]
    assert se.first_crossing(curve, 751.5) == (60.0, 20_000)  # unsorted input, equality counts, later dips ignored
    assert se.first_crossing(curve, 800.0) == (None, None)
    assert se.first_crossing([], 1.0) == (None, None)
    # An rlcontrol run from before eval/train_seconds: the env steps are known, the time is not.
    assert se.first_crossing([(10_000, None, 900.0)], 751.5) == (None, 10_000)


def test_summary_ratios_and_never_reached_note():
    def run(arm, seed, final, t, k):
        curve = [(k or 10_000, t, final)]
        return se.make_result(arm, "cartpole_swingup", seed, Path("x"),
                              {"env_steps": 20_000, "eval_return": final}, curve) | {"train_seconds": 100.0}

    results = [run("rlcontrol", 0, 800.0, 60.0, 10_000), run("rlcontrol", 1, 820.0, 120.0, 10_000),
               run("sb3", 0, 400.0, None, None), run("sb3", 1, 420.0, None, None)]
    summary = se.summarize(results, ["cartpole_swingup"], ["rlcontrol", "sb3"], [0, 1], 20_000)
    entry = summary["cartpole_swingup"]
    assert entry["arms"]["rlcontrol"]["mean_threshold_minutes"] == pytest.approx(1.5)
    assert entry["arms"]["sb3"]["seeds_reached"] == 0
    assert entry["return_ratio"] == pytest.approx(810.0 / 410.0)
    assert entry["threshold_time_ratio"] is None
    assert entry["threshold_note"] == "SB3 never reached it within 20,000 steps"
    table = se.format_tables(summary, 20_000)
    assert "| rlcontrol / SB3 |" in table and "SB3 never reached it" in table and "never, never" in table


def test_gym_adapter_matches_envs_make():
    actions = np.random.default_rng(0).uniform(-1, 1, (20, 1)).astype(np.float32)
    adapter = sb3_peer.make_gym_env("dmc:cartpole-swingup", seed=3, action_repeat=4)
    direct = envs.make("dmc:cartpole-swingup", seed=3, action_repeat=1)
    assert adapter.action_space.low.tolist() == [-1.0] and adapter.action_space.high.tolist() == [1.0]
    obs, _ = adapter.reset(seed=11)
    np.testing.assert_array_equal(obs, direct.reset(seed=11))
    assert adapter.observation_space.contains(obs)
    for action in actions:
        obs, reward, terminated, truncated, _ = adapter.step(action)
        total = 0.0
        for _ in range(4):  # action repeat 4 = the same action for 4 simulator steps, rewards summed
            result = direct.step(action)
            total += result.reward
        np.testing.assert_array_equal(obs, result.obs)
        assert reward == pytest.approx(total, abs=1e-12)
        assert not terminated and not truncated
    adapter.close()
    direct.close()


def test_gym_adapter_episode_end_is_truncation_and_episode_seeds_follow_rlcontrol():
    from rlcontrol.training.evaluate import episode_seed

    adapter = sb3_peer.make_gym_env("dmc:cartpole-swingup", seed=5, action_repeat=8)
    direct = envs.make("dmc:cartpole-swingup", seed=5, action_repeat=8)
    # reset() without a seed starts training episode k with rlcontrol's seed for it.
    obs, _ = adapter.reset()
    np.testing.assert_array_equal(obs, direct.reset(seed=episode_seed(5, 0, 0)))
    steps, done = 0, False
    while not done:
        _, _, terminated, truncated, _ = adapter.step(np.zeros(1, np.float32))
        steps += 1
        done = terminated or truncated
    assert steps == 125  # 1000 simulator steps / action repeat 8
    assert truncated and not terminated
    assert adapter.episodes_completed == 1
    obs, _ = adapter.reset()
    np.testing.assert_array_equal(obs, direct.reset(seed=episode_seed(5, 0, 1)))
    adapter.close()
    direct.close()


def test_sb3_arm_resumes_to_the_full_run(tmp_path):
    pytest.importorskip("stable_baselines3", reason="the SB3 peer needs the bench extra: scripts/setup.sh dev,bench")
    from stable_baselines3.common.save_util import load_from_pkl

    config = ROOT / "configs" / "td3_cartpole_swingup.yaml"
    run_dir = tmp_path / "sb3"
    kwargs = dict(threads=1, eval_episodes=1, overrides=TINY, learning_starts=400)
    first = sb3_peer.train_sb3(config, run_dir, 0, 2000, 1000, stop_after=1000, **kwargs)  # "interrupted" at 1000
    assert first["status"] == "stopped" and first["env_steps"] == 1000
    assert not (run_dir / "summary.json").exists()
    state = json.loads((run_dir / "checkpoints" / f"{1000:012d}" / "state.json").read_text())
    assert state["episodes_completed"] == 1 and [p[0] for p in state["curve"]] == [1000]

    summary = sb3_peer.train_sb3(config, run_dir, 0, 2000, 1000, **kwargs)  # the same command again continues it
    assert summary["env_steps"] == 2000 and summary["episodes"] == 2
    assert [p[0] for p in summary["curve"]] == [1000, 2000]
    assert summary["curve"][0] == state["curve"][0]  # the first segment's evaluation is kept
    assert summary["curve"][1][1] > summary["curve"][0][1]  # training seconds add up over both segments
    assert summary["sb3_hyperparameters"]["learning_starts"] == 50  # 400 env steps / action repeat 8
    final = run_dir / "checkpoints" / f"{2000:012d}"
    replay = load_from_pkl(final / "replay.pkl")  # the benchmark's own file (see train_sb3)
    assert replay.size() == 250  # all 2000 / 8 transitions: the first segment's replay was loaded
    assert json.loads((run_dir / "evals.json").read_text()) == summary["curve"]
    # Finished: read back, not retrained.
    assert sb3_peer.train_sb3(config, run_dir, 0, 2000, 1000, **kwargs)["curve"] == summary["curve"]
    # The parent reads the same run back from its run dir.
    result = se.finished_result("sb3", "cartpole_swingup", 0, run_dir, 2000, 8, 1000)
    assert result["final_return"] == summary["eval_return"] and result["threshold_env_steps"] is None


@pytest.mark.parametrize("args, message", [
    (["--tasks", "cartpole_swingup", "nope"], "unknown task 'nope'"),
    (["--config-prefix", "no_such_prefix"], "config file not found"),
    (["--arms", "sb4"], "unknown arm 'sb4'"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.sample_efficiency", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sample_efficiency: error:") and message in lines[0]
    assert proc.stdout == ""


def test_held_out_tasks_are_the_recipe_with_only_env_id_and_action_repeat_changed():
    from rlcontrol.config import load_config

    recipe = load_config(se.config_path("sac", "cheetah_run"))
    for task, (env_id, repeat) in se.HELD_OUT.items():
        assert not (se.ROOT / "configs" / f"sac_{task}.yaml").exists()  # no config names it
        assert se.config_path("sac", task) == se.config_path("sac", "cheetah_run")
        config = load_config(se.config_path("sac", task), se.task_overrides(task))
        assert (config.env.id, config.env.action_repeat) == (env_id, repeat)
        assert config.agent == recipe.agent and config.train == recipe.train and config.replay == recipe.replay
        assert se.REFERENCE_100K[task] > 0 and task in se.parse_args(["--tasks", task]).tasks
    assert se.task_overrides("walker_walk") == []
