"""Sim-to-real tools: domain randomization, system identification and live fine-tuning.

Empty until the sim2real issue lands; the package exists so the layout of the design card
(rlcontrol/, envs/, sim2real/, ros_nodes/, configs/, tests/) is installable from day one.
"""
