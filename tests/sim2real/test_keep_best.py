"""Keeping the best version, without ROS: the session's logs read back (episodes.jsonl after a kill),
the restore plan, the re-push message, the learner's version numbers across re-pushes and
restarts, and the `rlcontrol finetune` flags (one error line, exit 2)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from finetune_policies import export_constant_policy, make_finetune_run

from rlcontrol.cli import main
from rlcontrol.errors import UserError
from sim2real.finetune import (
    METRICS_FILE,
    FinetuneSettings,
    LiveLearner,
    episode_results,
    logged_max_version,
    read_jsonl,
    restore_plan,
    update_message,
)
from sim2real.version_selection import SelectionSettings


@pytest.fixture(scope="module")
def run_and_policies(tmp_path_factory):
    root = tmp_path_factory.mktemp("keep_best")
    run = make_finetune_run(root)
    return run, export_constant_policy(run, root / "good.onnx", 0.0), export_constant_policy(run, root / "bad.onnx", 0.9)


def sha(path) -> str:
    from rlcontrol.deploy.runtime import sha256_file

    return sha256_file(path)


def write_episodes(out, rows, torn_tail: bool = False):
    out.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if torn_tail:  # a kill -9 in the middle of the last write
        text += '{"episode": 99, "return": 12'
    (out / "episodes.jsonl").write_text(text)


def row(version, ret, path, digest, *, std=0.2, whole=True, intervened=False):
    return {"episode": 0, "return": ret, "steps": 100, "policy_version": version, "policy_sha256": digest,
            "policy_path": str(path), "start_version": version if whole else version - 1, "whole": whole,
            "intervened": intervened, "exploration_std": std}


def session_log(out, good, bad):
    """v0 = good (3 whole episodes), v1 = bad (3 whole), plus episodes the rule must not count."""
    g, b = sha(good), sha(bad)
    rows = ([row(0, r, good, g) for r in (230.0, 240.0, 250.0)]
            + [row(1, 120.0, bad, b, whole=False)]  # started under v0: not v1's alone
            + [row(1, r, bad, b) for r in (60.0, 65.0, 70.0)]
            + [row(1, 900.0, bad, b, intervened=True)])  # an e-stop: the safety layer's steps, not the policy's
    write_episodes(out, rows, torn_tail=True)


def test_episode_log_reads_back_whole_uninterrupted_episodes_and_skips_a_torn_line(tmp_path, run_and_policies):
    _, good, bad = run_and_policies
    session_log(tmp_path, good, bad)
    episodes = episode_results(tmp_path)
    assert [(e.version, e.ret) for e in episodes] == [(0, 230), (0, 240), (0, 250), (1, 60), (1, 65), (1, 70)]
    assert all(e.exploration_std == 0.2 for e in episodes) and episodes[0].sha256 == sha(good)
    # Rows of older sessions (no std, sha256 or whole) count by version, with the file found in OUT.
    (tmp_path / "policy-v0002.onnx").write_bytes(good.read_bytes())
    with open(tmp_path / "episodes.jsonl", "a") as handle:
        handle.write("\n" + json.dumps({"episode": 7, "return": 10.0, "policy_version": 2}) + "\n")
    legacy = episode_results(tmp_path)[-1]
    assert (legacy.version, legacy.exploration_std, legacy.sha256) == (2, None, None)
    assert legacy.path == str((tmp_path / "policy-v0002.onnx").resolve())


def test_restore_plan_picks_the_best_logged_version(tmp_path, run_and_policies):
    _, good, bad = run_and_policies
    session_log(tmp_path, good, bad)
    decision, path, digest = restore_plan(tmp_path, SelectionSettings())
    assert decision.best.label == 0 and path == str(good) and digest == sha(good)
    # v0 [230, 240, 250], v1 [60, 65, 70]: pooled sd sqrt((200 + 50) / 4) = 7.906 with 4 df;
    # v0: mean 240, lower 240 - 1.5332 * 7.906 / sqrt(3) = 233.0
    assert decision.best_text == ("compared at exploration std 0.2: v0: mean 240.0 over 3 episodes, 90% lower bound "
                                  "233.0 (best)")
    assert decision.best.lower == pytest.approx(240 - 1.5332 * math.sqrt(62.5) / math.sqrt(3), abs=0.01)


def test_restore_plan_errors_are_one_line(tmp_path, run_and_policies):
    _, good, bad = run_and_policies
    with pytest.raises(UserError, match="episodes.jsonl not found"):
        restore_plan(tmp_path, SelectionSettings())
    write_episodes(tmp_path, [row(0, 200.0, good, sha(good)), row(0, 210.0, good, sha(good))])
    with pytest.raises(UserError) as info:
        restore_plan(tmp_path, SelectionSettings())
    assert str(info.value) == (f"nothing to restore: no version has 3 whole episodes at the last exploration std in "
                               f"{tmp_path / 'episodes.jsonl'} (v0: 2)")
    gone = tmp_path / "gone.onnx"
    write_episodes(tmp_path, [row(0, r, gone, "0" * 64) for r in (1.0, 2.0, 3.0)])
    with pytest.raises(UserError, match="the best version v0's file .*gone.onnx is gone"):
        restore_plan(tmp_path, SelectionSettings())


def test_re_push_message_carries_the_file_its_digest_and_a_probe_the_file_satisfies(run_and_policies):
    from rlcontrol.deploy import runtime
    from ros_nodes.policy_update import load_checked, parse_request

    _, good, bad = run_and_policies
    message = update_message(good, sha(good), 7)
    assert message["version"] == 7 and message["sha256"] == sha(good) and message["path"] == str(good.resolve())
    assert np.asarray(message["probe"]["actions"]).shape == (16, 1)
    # The policy node's own checks accept it in place of a running v6 of the same contract.
    running = runtime.load(bad).metadata
    request = parse_request(json.dumps(message), current_version=6)
    assert load_checked(request, running).sha256 == sha(good)
    with pytest.raises(UserError, match="sha256 mismatch"):
        update_message(good, sha(bad), 8)


def test_learner_numbers_versions_above_re_pushes_and_restores(tmp_path, run_and_policies):
    run, good, _ = run_and_policies
    out = tmp_path / "out"
    learner = LiveLearner(run, tmp_path / "log", out, FinetuneSettings())
    assert learner.version == 0
    learner.observe_version(4)  # someone pushed v4 (a restore, a test)
    assert learner.allocate_version() == 5 and learner.version == 5
    learner.observe_version(3)  # older: no effect
    assert learner.allocate_version() == 6
    # A restarted learner (no learner.pt yet) starts above every version in the logs.
    out.mkdir(exist_ok=True)
    with open(out / METRICS_FILE, "a") as handle:
        handle.write(json.dumps({"event": "rollback", "version": 9, "restores": 0}) + "\n")
    assert logged_max_version(out) == 9
    assert LiveLearner(run, tmp_path / "log", out, FinetuneSettings()).version == 9


def run_cli(capsys, *args):
    code = main(["finetune", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("flags, message", [
    (["--min-episodes", "1"], "argument --min-episodes: expected a number >= 2, got 1"),
    (["--min-episodes", "x"], "argument --min-episodes: expected a whole number, got 'x'"),
    (["--confidence", "1"], "argument --confidence: expected a number between 0.5 and 1 (exclusive), got 1"),
    (["--confidence", "0.3"], "argument --confidence: expected a number between 0.5 and 1 (exclusive), got 0.3"),
    (["--confidence", "nan"], "argument --confidence: expected a number between 0.5 and 1 (exclusive), got nan"),
    (["--dry-run"], "--dry-run goes with --restore-best"),
    (["--keep-best=no"], "argument --keep-best/--no-keep-best: ignored explicit argument 'no'"),
])
def test_bad_keep_best_flags_are_one_line_and_exit_2(tmp_path, capsys, flags, message):
    code, out, err = run_cli(capsys, tmp_path, *flags)
    assert code == 2 and out == ""
    assert err == f"rlcontrol: error: {message}\n"


def test_keep_best_is_opt_in_and_rollback_part_of_it():
    from rlcontrol.cli import build_parser

    parse = build_parser().parse_args
    args = parse(["finetune", "RUN"])
    assert (args.keep_best, args.rollback) == (False, True)
    assert parse(["finetune", "RUN", "--keep-best"]).keep_best
    assert not SelectionSettings().keep_best and not SelectionSettings().rolls_back


def test_restore_best_dry_run_prints_the_best_version_and_why(tmp_path, capsys, run_and_policies):
    _, good, bad = run_and_policies
    session_log(tmp_path / "finetune", good, bad)
    code, out, err = run_cli(capsys, tmp_path, "--restore-best", "--dry-run")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == (f"best version by the rule: v0 ({good}): compared at exploration std 0.2: v0: mean 240.0 over "
                        "3 episodes, 90% lower bound 233.0 (best)")
    assert lines[1:] == ["versions (episodes under the compared exploration std):",
                         "  v0: 3 episodes, mean 240.0, 90% bounds [233.0, 247.0]  [best]",
                         "  v1: 3 episodes, mean 65.0, 90% bounds [58.0, 72.0]"]
    code, out, _ = run_cli(capsys, tmp_path, "--restore-best", "--dry-run", "--min-episodes", "4", "--json")
    assert code == 2
    code, out, _ = run_cli(capsys, tmp_path, "--restore-best", "--dry-run", "--confidence", "0.95", "--json")
    result = json.loads(out.splitlines()[-1])
    assert result["best_version"] == 0 and result["pushed_version"] is None and result["dry_run"]
    # nothing was pushed or logged
    assert read_jsonl(tmp_path / "finetune" / METRICS_FILE) == []


class _Learner:
    """The LiveLearner's version numbering, without a run."""

    version = updates = 0

    def observe_version(self, version):
        if version is not None:
            self.version = max(self.version, int(version))

    def allocate_version(self):
        self.version += 1
        return self.version


class _Log:
    def __init__(self):
        self.lines = []

    def info(self, text):
        self.lines.append(text)

    warning = error = info


def _keeper(tmp_path, plateau_rule=None, **settings):
    from ros_nodes.keep_best import VersionKeeper

    pushed = []
    keeper = VersionKeeper(SelectionSettings(**settings), _Learner(), tmp_path, pushed.append, _Log(),
                           plateau_rule=plateau_rule)
    keeper.start()
    return keeper, pushed


def _runs(keeper, version, path, returns):
    """The policy node runs ``path`` as ``version``, then whole episodes with these returns (std 0.1)."""
    status = {"version": version, "sha256": sha(path), "path": str(path), "refused": 0, "exploration_std": 0.1}
    keeper.on_policy_status(status)
    keeper.observe("policy_status", status)
    for ret in returns:
        keeper.observe("episode", {"event": "start"})
        keeper.observe("episode", {"event": "end", "episode": 0, "return": ret, "steps": 100})


def _export(version, path):
    return {"version": version, "path": str(path), "sha256": sha(path)}


def test_without_keep_best_every_export_is_pushed_nothing_rolled_back_and_the_session_ends_where_it_is(
        tmp_path, run_and_policies):
    _, good, bad = run_and_policies
    keeper, pushed = _keeper(tmp_path)
    _runs(keeper, 0, good, [240.0])
    keeper.offer(_export(1, bad))
    keeper.tick()  # pushed at once: v0 need not be judged first
    assert [u["version"] for u in pushed] == [1]
    _runs(keeper, 1, bad, [60.0, 65.0, 70.0])
    _runs(keeper, 0, good, [240.0, 250.0, 230.0])  # someone else (a test, an undo) put v0's weights back
    _runs(keeper, 3, bad, [62.0, 66.0, 68.0])  # and the bad file again: clearly worse than v0
    keeper.tick()
    assert len(pushed) == 1 and keeper.rollbacks == 0  # keep-best off: no rollback
    final = keeper.finish()
    assert (final["version"], final["pushed_version"], final["best_version"]) == (3, None, 0)
    assert "(best); keep-best is off: ended on the running v3 (= v1)" in final["reason"] and len(pushed) == 1
    assert [row["policy_version"] for row in read_jsonl(tmp_path / "episodes.jsonl")] == [0, 1, 1, 1, 0, 0, 0, 3, 3, 3]


def test_with_keep_best_an_export_waits_for_the_judgement_and_a_clearly_worse_one_is_rolled_back(
        tmp_path, run_and_policies):
    _, good, bad = run_and_policies
    keeper, pushed = _keeper(tmp_path, keep_best=True)
    _runs(keeper, 0, good, [240.0, 250.0])
    keeper.offer(_export(1, bad))
    keeper.tick()
    assert pushed == [] and keeper.status()["held_version"] == 1  # v0 has 2 of 3 episodes
    _runs(keeper, 0, good, [230.0])
    keeper.tick()
    assert [u["version"] for u in pushed] == [1]
    _runs(keeper, 1, bad, [60.0, 65.0, 70.0])
    keeper.tick()  # v1: upper 65 + 7.0 < v0's lower 233.0: v0's file again, as v2
    assert keeper.rollbacks == 1 and (pushed[-1]["version"], pushed[-1]["sha256"]) == (2, sha(good))
    assert read_jsonl(tmp_path / METRICS_FILE)[-1]["reason"].endswith("rolled back to v0 (re-pushed as v2)")
    _runs(keeper, 2, good, [])
    final = keeper.finish()
    assert (final["version"], final["weights_of"], final["pushed_version"]) == (2, 0, None)
    assert final["reason"].endswith("ended on v0, which was running")


def test_a_plateau_stops_the_pushes_and_the_session_ends_on_the_version_that_reached_it(tmp_path, run_and_policies):
    from sim2real.plateau import PlateauRule

    _, good, bad = run_and_policies
    keeper, pushed = _keeper(tmp_path, plateau_rule=PlateauRule(window=3, tolerance=0.05))
    _runs(keeper, 0, bad, [100.0, 110.0])  # the first policy: baseline 105
    _runs(keeper, 1, good, [300.0, 500.0])
    # last 3 after v0: 300, 500, 505 -> spread 205 > 0.05 * gain: no plateau yet
    _runs(keeper, 2, good, [505.0])
    assert keeper.plateau is None and keeper.status()["plateau"] is None
    _runs(keeper, 2, good, [500.0])  # 500, 505, 500: mean 501.67, gain 396.67, spread 5 <= 19.8
    plateau = keeper.status()["plateau"]
    assert plateau["version"] == 2 and plateau["sha256"] == sha(good) and "spread of 5.0" in plateau["reason"]
    assert read_jsonl(tmp_path / METRICS_FILE)[-1]["event"] == "plateau"
    keeper.offer(_export(3, bad))
    keeper.tick()
    assert pushed == []  # frozen: no export is pushed after the plateau
    final = keeper.finish()
    assert (final["version"], final["weights_of"], final["pushed_version"]) == (2, 2, None)
    assert final["stopped_by_plateau"] and final["reason"].startswith("plateau: the last 3 episodes")


def test_a_push_in_flight_at_the_plateau_is_undone_at_the_end(tmp_path, run_and_policies):
    from sim2real.plateau import PlateauRule

    _, good, bad = run_and_policies
    keeper, pushed = _keeper(tmp_path, plateau_rule=PlateauRule(window=3, tolerance=0.05))
    _runs(keeper, 0, bad, [100.0])
    _runs(keeper, 1, good, [500.0, 505.0, 500.0])  # plateau on v1
    assert keeper.plateau["version"] == 1
    _runs(keeper, 2, bad, [])  # a push already sent before the plateau was accepted after it
    final = keeper.finish()
    assert (final["running_version"], final["weights_of"], final["version"]) == (2, 1, 3)
    assert pushed[-1]["sha256"] == sha(good) and "(re-pushed as v3)" in final["reason"]


@pytest.mark.parametrize("flags, message", [
    (["--plateau-window", "1"], "argument --plateau-window: expected a number >= 2, got 1"),
    (["--plateau-tolerance", "0"], "argument --plateau-tolerance: expected a number between 0 and 1 (exclusive), got 0"),
    (["--plateau-tolerance", "inf"],
     "argument --plateau-tolerance: expected a number between 0 and 1 (exclusive), got inf"),
])
def test_bad_plateau_flags_are_one_line_and_exit_2(tmp_path, capsys, flags, message):
    code, out, err = run_cli(capsys, tmp_path, "--stop-on-plateau", *flags)
    assert code == 2 and out == "" and err == f"rlcontrol: error: {message}\n"
