"""The topic contract between the policy node, the simulated robot and the recorder.

Every name is a default: each node takes it as a parameter, so a real robot's topics can be
mapped in without code changes.

    /robot/obs/<name>  std_msgs/Float64MultiArray  one per observation component (names from the
                       policy metadata's `components`, e.g. position, velocity); layout.dim[0].label
                       carries the name; published by the robot at its sensor rate
    /joint_states      sensor_msgs/JointState      1-DOF joints by name (position, velocity; effort
                       optional), stamped; the simulated robot publishes every hinge and slide
                       joint of MuJoCo tasks (qpos, qvel); what `rlcontrol sysid` fits to
    /robot/command     std_msgs/Float64MultiArray  physical command in the metadata's action order,
                       as ros2_control's forward command controllers take it
    /robot/applied_command std_msgs/Float64MultiArray  the command the robot actually applied on its
                       last step (after its own limits); what recordings use as the action
    /robot/reward      std_msgs/Float64            reward of the step the robot just applied
    /robot/episode     std_msgs/String             JSON: {"event": "start"|"end", "episode": int,
                       "steps": int, "return": float, "terminated": bool, "truncated": bool}; the simulated
                       robot adds "late_commands" to an end (steps whose observation had no answer yet, so
                       the previous command was applied) and "waited_s" to a start after wait_for_learner
    /estop             std_msgs/Bool               true = stop now; latched by the policy node
    /estop/reset       std_msgs/Empty              clears a latched e-stop
    /safety_driver/takeover std_msgs/Bool          true = the safety driver has control (the policy
                       node sends the safe command, the episode ends there and live fine-tuning
                       labels the policy's last step a termination); false = control back to the
                       policy (a new episode). Not latched: the driver releases it explicitly
    /finetune/undo_episode std_msgs/Empty          withdraw the last ended episode from the learner's
                       replay (recorded in the transition log as an undo record)
    /finetune/trained_through std_msgs/Int64       the last robot episode (/robot/episode's "episode") whose
                       transitions the live learner has trained on, as its replay ratio allows; published
                       with train_between_episodes (reliable, transient local, depth 1). A robot that trains
                       between episodes, as Learning to Drive in a Day did, starts its next episode after it
                       (the simulated robot's wait_for_learner)
    /diagnostics       diagnostic_msgs/DiagnosticArray
    /policy/update     std_msgs/String             JSON request to hot-swap the policy node's weights:
                       {"path": absolute .onnx path, "sha256": hex, "version": int (> running),
                       "probe": {"inputs": {name: [N, ...]}, "actions": [N, action_dim]} (optional,
                       N <= 64), "atol": float (optional, default 1e-4)}; reliable, depth 10, volatile
    /policy/undo       std_msgs/Empty              back to the previous weights (one level); reliable, depth 10
    /policy/status     std_msgs/String             JSON {"version": int (0 = model_path), "sha256", "path",
                       "previous_version": int | null, "accepted", "refused", "undone": int,
                       "last_refusal": str, "exploration_std": float (the command noise, fixed while active)};
                       reliable, transient local, depth 1; published at activate
                       and after every update or undo (ros_nodes.policy_update checks the requests)

Per step the simulated robot publishes, in this order: applied_command, reward, joint_states
(MuJoCo tasks), then every observation component of the new state, then (if the episode
ended) an "end" event; after a reset it publishes a "start" event, the joint states and the
first observation. A recording of these topics therefore holds exact (obs, action, reward,
next obs, ending) transitions, and (state, command, next state) joint trajectories.
"""

OBS_PREFIX = "/robot/obs/"
JOINT_STATES = "/joint_states"
COMMAND = "/robot/command"
APPLIED_COMMAND = "/robot/applied_command"
REWARD = "/robot/reward"
EPISODE = "/robot/episode"
ESTOP = "/estop"
ESTOP_RESET = "/estop/reset"
TAKEOVER = "/safety_driver/takeover"
UNDO_EPISODE = "/finetune/undo_episode"
TRAINED_THROUGH = "/finetune/trained_through"
DIAGNOSTICS = "/diagnostics"
POLICY_UPDATE = "/policy/update"
POLICY_UNDO = "/policy/undo"
POLICY_STATUS = "/policy/status"


def obs_topic(name: str) -> str:
    return OBS_PREFIX + name
