"""Parallel actors for the shared off-policy loop (D4PG's distributed actors; any algorithm).

    distributed.num_actors: 1      the trainer steps its own environment, in process, no Ray
                                   (InProcessCollector: the classic loop, exactly)
    distributed.num_actors: K > 1  K Ray actor workers, each with its own environment, policy
    (or a ray_address)             copy and noise scale, feed the learner's one replay in chunks
                                   (RayCollector); the learner publishes its policy every
                                   weight_sync_every updates

`ray.init()` starts a local cluster in process by default; `rlcontrol train --ray-address
HOST:PORT` (or `auto`) joins an existing one. Ray is imported only by distributed runs.
"""

from rlcontrol.distributed.collector import Harvest, InProcessCollector, make_collector, uses_ray
from rlcontrol.distributed.worker import ActorWorker, noise_scales, worker_seed

__all__ = ["ActorWorker", "Harvest", "InProcessCollector", "make_collector", "noise_scales", "uses_ray",
           "worker_seed"]
