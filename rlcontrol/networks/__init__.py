"""Neural networks shared by the agents: MLP actors and (ensembles of) critics."""

from rlcontrol.networks.actor import DeterministicActor
from rlcontrol.networks.critic import EnsembleCritic
from rlcontrol.networks.ensemble_linear import EnsembleLinear

__all__ = ["DeterministicActor", "EnsembleCritic", "EnsembleLinear"]
