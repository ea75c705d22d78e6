"""ROS 2 (rclpy) lifecycle nodes: the policy node with its safety layer, the simulated robot.

Empty until the ROS 2 deployment issue lands; the package exists so the layout of the
design card is installable from day one.
"""
