"""ros_nodes.finetune_launch.control_loop_summary: the policy node's /diagnostics reports of a
fine-tuning session, reduced to missed ticks near weight swaps and latency (pure, no ROS graph)."""

from ros_nodes.finetune_launch import control_loop_summary


def report(t, missed, accepted, p50=0.3, p99=0.9, worst=2.0):
    return {"t_s": t, "missed_ticks": missed, "policy_accepted": accepted, "latency_p50_ms": p50,
            "latency_p99_ms": p99, "latency_max_ms": worst, "obs_to_command_p99_ms": p99 + 0.1, "loop_rate_hz": 120.0}


def test_missed_ticks_in_a_swaps_interval_and_the_next_count_as_near_the_swap():
    series = [report(0, 0, 0), report(1, 0, 0), report(2, 1, 1),  # a swap and a late tick in the same second
              report(3, 3, 1),  # two more in the next second: still near the swap
              report(4, 4, 1),  # one more, two reports later: not near it
              report(5, 4, 2), report(6, 4, 2, p99=3.5, worst=7.0), report(7, 4, 2, p99=1.1)]
    summary = control_loop_summary(series)
    assert summary["reports"] == 8 and summary["swaps"] == 2
    assert summary["missed_ticks"] == 4 and summary["missed_ticks_near_swaps"] == 3
    assert summary["worst_latency_p99_ms"] == 3.5 and summary["worst_latency_max_ms"] == 7.0
    assert summary["last"]["latency_p99_ms"] == 1.1 and summary["last"]["policy_accepted"] == 2
    assert "t_s" not in summary["last"]


def test_a_swap_in_the_last_report_and_no_reports():
    summary = control_loop_summary([report(0, 0, 0), report(1, 2, 1)])
    assert summary["missed_ticks_near_swaps"] == 2 and summary["swaps"] == 1
    assert control_loop_summary([]) == {"reports": 0}
    assert control_loop_summary([{"t_s": 0.0, "loop_rate_hz": 1.0}]) == {"reports": 0}  # before the node is configured
