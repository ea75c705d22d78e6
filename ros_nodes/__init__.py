"""ROS 2 (rclpy) nodes: the lifecycle policy node with its safety layer, the simulated robot,
the rosbag2 recorder, bag tools and the `rlcontrol deploy` launcher.

Importing this package imports nothing; the modules that need rclpy import it themselves, so
`ros_nodes.safety` and `ros_nodes.observation_map` stay usable (and testable) without ROS.
"""
