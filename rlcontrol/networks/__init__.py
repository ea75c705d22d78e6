"""Neural networks shared by the agents: MLP actors and (ensembles of) critics, flat or split."""

from rlcontrol.networks.actor import DeterministicActor, GaussianActor
from rlcontrol.networks.critic import EnsembleCritic
from rlcontrol.networks.ensemble_linear import EnsembleLinear
from rlcontrol.networks.split import SplitActor, SplitEnsembleCritic, SplitMLP, SplitTrunk

__all__ = ["DeterministicActor", "EnsembleCritic", "EnsembleLinear", "GaussianActor", "SplitActor",
           "SplitEnsembleCritic", "SplitMLP", "SplitTrunk"]
