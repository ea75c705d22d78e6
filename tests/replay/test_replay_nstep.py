"""NStepAccumulator against hand-computed n-step transitions."""

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from rlcontrol.replay import NStepAccumulator, ReplayBuffer

GAMMA = 0.9
REWARDS = [1.0, 2.0, 3.0, 4.0, 5.0]  # r_0 .. r_4 of a 5-step episode


def obs(t):
    """Observation at time t: an array that says which step it is."""
    return np.array([t, 10.0 * t], dtype=np.float32)


def run_episode(acc, *, terminated_at_end, truncated_at_end, rewards=REWARDS, first_t=0):
    """Feed one episode step by step; returns [(t, emitted transitions)] per step."""
    emitted = []
    last = len(rewards) - 1
    for k, reward in enumerate(rewards):
        t = first_t + k
        out = acc.add(
            obs(t),
            np.array([t], dtype=np.float32),
            reward,
            obs(t + 1),
            terminated=terminated_at_end and k == last,
            truncated=truncated_at_end and k == last,
        )
        emitted.append(out)
    return emitted


def summarize(transition):
    """(t of obs, R, discount, t of next_obs)."""
    return (
        int(transition["obs"][0]),
        transition["reward"],
        transition["discount"],
        int(transition["next_obs"][0]),
    )


def test_three_step_episode_ending_in_termination():
    acc = NStepAccumulator(n=3, gamma=GAMMA)
    per_step = run_episode(acc, terminated_at_end=True, truncated_at_end=False)
    assert [len(out) for out in per_step] == [0, 0, 1, 1, 3]
    got = [summarize(tr) for out in per_step for tr in out]
    # R_t = r_t + 0.9 r_{t+1} + 0.81 r_{t+2}; windows that reach the terminal step get discount 0.
    expected = [
        (0, 1 + 0.9 * 2 + 0.81 * 3, 0.729, 3),  # 5.23, full window, bootstraps from obs_3
        (1, 2 + 0.9 * 3 + 0.81 * 4, 0.729, 4),  # 7.94
        (2, 3 + 0.9 * 4 + 0.81 * 5, 0.0, 5),  # 10.65, last step of the window is terminal
        (3, 4 + 0.9 * 5, 0.0, 5),  # 8.5, m = 2
        (4, 5.0, 0.0, 5),  # m = 1
    ]
    for (t, r, d, nt), (et, er, ed, ent) in zip(got, expected, strict=True):
        assert (t, nt) == (et, ent)
        assert r == pytest.approx(er, abs=1e-12)
        assert d == pytest.approx(ed, abs=1e-12)
    assert len(acc) == 0


def test_three_step_episode_ending_in_truncation_bootstraps_from_final_obs():
    acc = NStepAccumulator(n=3, gamma=GAMMA)
    per_step = run_episode(acc, terminated_at_end=False, truncated_at_end=True)
    got = [summarize(tr) for out in per_step for tr in out]
    expected = [
        (0, 5.23, 0.729, 3),
        (1, 7.94, 0.729, 4),
        (2, 10.65, 0.729, 5),  # gamma^3
        (3, 8.5, 0.81, 5),  # gamma^2, bootstraps from the final obs_5
        (4, 5.0, 0.9, 5),  # gamma^1
    ]
    for (t, r, d, nt), (et, er, ed, ent) in zip(got, expected, strict=True):
        assert (t, nt) == (et, ent)
        assert r == pytest.approx(er, abs=1e-12)
        assert d == pytest.approx(ed, abs=1e-12)


@pytest.mark.parametrize("terminated", [True, False])
def test_n1_gives_plain_transitions(terminated):
    acc = NStepAccumulator(n=1, gamma=GAMMA)
    per_step = run_episode(acc, terminated_at_end=terminated, truncated_at_end=not terminated)
    assert [len(out) for out in per_step] == [1] * 5
    for t, (out,) in enumerate(per_step):
        is_terminal = terminated and t == 4
        assert summarize(out) == (t, REWARDS[t], GAMMA * (1 - is_terminal), t + 1)
        np.testing.assert_array_equal(out["action"], [t])


def test_windows_never_span_two_episodes():
    acc = NStepAccumulator(n=3, gamma=GAMMA)
    # Episode 1 is shorter than n and terminates; episode 2 starts at t=100.
    first = run_episode(acc, rewards=[1.0, 2.0], terminated_at_end=True, truncated_at_end=False)
    assert [summarize(tr) for out in first for tr in out] == [(0, 1 + 0.9 * 2, 0.0, 2), (1, 2.0, 0.0, 2)]
    second = run_episode(
        acc, rewards=[7.0, 8.0, 9.0], first_t=100, terminated_at_end=False, truncated_at_end=False
    )
    (window,) = second[2]
    assert summarize(window) == (100, pytest.approx(7 + 0.9 * 8 + 0.81 * 9), pytest.approx(0.729), 103)


def test_reset_drops_an_episode_cut_without_end_flag():
    acc = NStepAccumulator(n=3, gamma=GAMMA)
    run_episode(acc, rewards=[1.0, 2.0], terminated_at_end=False, truncated_at_end=False)
    assert len(acc) == 2
    acc.reset()
    assert len(acc) == 0
    out = run_episode(
        acc, rewards=[7.0, 8.0, 9.0], first_t=100, terminated_at_end=False, truncated_at_end=False
    )
    assert summarize(out[2][0])[0] == 100


def test_terminated_wins_over_truncated():
    acc = NStepAccumulator(n=2, gamma=GAMMA)
    (out,) = acc.add(obs(0), np.zeros(1), 1.0, obs(1), terminated=True, truncated=True)
    assert out["discount"] == 0.0


def test_dict_observations_are_copied_and_emitted_as_dicts():
    acc = NStepAccumulator(n=2, gamma=GAMMA)
    pixels = np.zeros((2, 2, 3), dtype=np.uint8)
    joints = np.zeros(3, dtype=np.float64)
    emitted = []
    for t in range(3):
        pixels[:] = t  # the env overwrites its arrays in place
        joints[:] = t
        next_pixels, next_joints = np.full_like(pixels, t + 1), np.full_like(joints, t + 1)
        emitted += acc.add(
            {"pixels": pixels, "joints": joints},
            np.zeros(2),
            1.0,
            {"pixels": next_pixels, "joints": next_joints},
            terminated=False,
            truncated=t == 2,
        )
    assert len(emitted) == 3
    for t, tr in enumerate(emitted):
        assert set(tr["obs"]) == {"pixels", "joints"}
        assert tr["obs"]["pixels"].dtype == np.uint8
        np.testing.assert_array_equal(tr["obs"]["pixels"], t)
        np.testing.assert_array_equal(tr["obs"]["joints"], t)
        np.testing.assert_array_equal(tr["next_obs"]["joints"], min(t + 2, 3))


def feed(acc, steps):
    out = []
    for t, (reward, term, trunc) in enumerate(steps):
        out += acc.add(obs(t), np.array([t, -t], np.float32), reward, obs(t + 1), term, trunc)
    return out


def dict_obs(t):
    return {"pixels": np.full((2, 2), t, np.uint8), "joints": obs(t)}


@pytest.mark.parametrize("use_dict", [False, True])
def test_state_dict_round_trip_mid_episode_gives_the_same_future(tmp_path, use_dict):
    make_obs = dict_obs if use_dict else obs
    original = NStepAccumulator(n=4, gamma=GAMMA)
    for t in range(2):  # two steps pending, nothing emitted yet
        assert (
            original.add(make_obs(t), np.array([t, -t], np.float32), float(t), make_obs(t + 1), False, False)
            == []
        )
    # Through a safetensors file, as a checkpoint would go (no pickle).
    save_file(original.state_dict(), str(tmp_path / "acc.safetensors"))
    restored = NStepAccumulator(n=4, gamma=GAMMA)
    restored.load_state_dict(load_file(str(tmp_path / "acc.safetensors")))
    assert len(restored) == 2
    for t in range(2, 6):
        end = t == 5
        args = (make_obs(t), np.array([t, -t], np.float32), float(t), make_obs(t + 1), False, end)
        a, b = original.add(*args), restored.add(*args)
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert x["reward"] == y["reward"] and x["discount"] == y["discount"]
            np.testing.assert_array_equal(x["action"], y["action"])
            for key in ("obs", "next_obs"):
                if use_dict:
                    for part in x[key]:
                        np.testing.assert_array_equal(x[key][part], y[key][part])
                        assert x[key][part].dtype == y[key][part].dtype
                else:
                    np.testing.assert_array_equal(x[key], y[key])


def test_empty_state_round_trip_and_mismatched_state_is_rejected():
    acc = NStepAccumulator(n=3, gamma=GAMMA)
    fresh = NStepAccumulator(n=3, gamma=GAMMA)
    fresh.load_state_dict(acc.state_dict())
    assert len(fresh) == 0
    with pytest.raises(ValueError, match="n=3"):
        NStepAccumulator(n=5, gamma=GAMMA).load_state_dict(acc.state_dict())
    feed(acc, [(1.0, False, False)])
    state = acc.state_dict()
    del state["action"]
    with pytest.raises(ValueError, match="malformed"):
        fresh.load_state_dict(state)


@pytest.mark.parametrize("n, gamma", [(0, 0.9), (2.5, 0.9), (3, 1.5), (3, -0.1)])
def test_invalid_arguments(n, gamma):
    with pytest.raises(ValueError):
        NStepAccumulator(n=n, gamma=gamma)


def test_emitted_transitions_go_straight_into_the_buffer():
    acc = NStepAccumulator(n=3, gamma=GAMMA)
    buffer = ReplayBuffer(16, (2,), 1)
    for out in run_episode(acc, terminated_at_end=True, truncated_at_end=False):
        for transition in out:
            buffer.add(transition)
    assert len(buffer) == 5
    tensors, _ = buffer.state_dict()
    np.testing.assert_allclose(tensors["reward"].numpy(), [5.23, 7.94, 10.65, 8.5, 5.0], rtol=1e-6)
    np.testing.assert_allclose(tensors["discount"].numpy(), [0.729, 0.729, 0, 0, 0], rtol=1e-6)
    np.testing.assert_array_equal(tensors["next_obs"].numpy()[:, 0], [3, 4, 5, 5, 5])
