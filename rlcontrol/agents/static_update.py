"""The DDPG-family update on fixed buffers, replayed as CUDA graphs (`train.cuda_graphs: true`).

On a GPU, one TD3 update at these network sizes is some 60 small kernels, and launching them
one by one from Python costs more than running them: 3.9 ms an env step on an H200, where the
arithmetic takes microseconds (docs/benchmarks.md, "GPU"). A CUDA graph records the kernels of
one update once and replays them with a single launch. That needs every tensor the update
touches at a fixed address, so:

- each batch is copied into static input buffers (the first batch fixes their shapes);
- parameters, optimizer moments and step counters are already updated in place
  (rlcontrol/optim.py, `_foreach_lerp_`), and the normalizer's statistics are in-place buffers;
- the two kinds of update, critic only and critic + actor + Polyak targets (every
  `policy_delay`-th), are two graphs, chosen on the host by the update counter;
- the target-smoothing noise is drawn outside the graph from the agent's own generator, so
  runs stay reproducible and checkpoints hold the generator state as before.

Capturing needs a few eager warm-up updates; the agent's state is saved before them and put
back (in place) afterwards, so warm-up does not count as training. Learning rates are baked
into a graph: if `actor_opt.lr` or `critic_opt.lr` change (fine-tuning's lr-scale), the graphs
are captured again. Updates with `train_actor=False` run eagerly on the same tensors.

`capture=False` runs the same static-buffer path eagerly, which is how the CPU tests check the
plumbing (buffers, warm-up and restore, metric copies) without a GPU.
"""

from __future__ import annotations

import copy

import torch


class StaticUpdates:
    WARMUP = 3  # eager updates of each kind on a side stream before capture (cuBLAS workspaces, allocator)

    def __init__(self, agent, capture: bool = True):
        if capture and agent.device.type != "cuda":
            raise ValueError("CUDA graphs need the agent on a CUDA device (train.device: cuda)")
        self.agent, self.capture = agent, capture
        self._inputs: tuple | None = None
        self._graphs: dict[bool, tuple[torch.cuda.CUDAGraph, dict]] = {}
        self._lrs: tuple[float, float] | None = None
        self.captures = 0  # how many times the graphs were (re)built

    def _current_lrs(self) -> tuple[float, float]:
        return (self.agent.actor_opt.lr, self.agent.critic_opt.lr)

    def run(self, inputs: tuple, actor_step: bool) -> dict[str, torch.Tensor]:
        """One update on `inputs` (obs, action, reward, discount, next_obs, std_normal, weights);
        returns copies of the metrics (the graph's own outputs are overwritten by the next replay)."""
        if self._inputs is None or self._lrs != self._current_lrs() or not self._same_shapes(inputs):
            self._build(inputs)
        for static, value in zip(self._inputs, inputs, strict=True):
            if static is not None:
                static.copy_(value)
        if self.capture:
            graph, outputs = self._graphs[actor_step]
            graph.replay()
        else:
            outputs = self.agent._update_step(*self._inputs, actor_step=actor_step)
        return {name: value.clone() for name, value in outputs.items()}

    def _same_shapes(self, inputs: tuple) -> bool:
        return all((a is None) == (b is None) and (a is None or a.shape == b.shape)
                   for a, b in zip(self._inputs, inputs, strict=True))

    def _build(self, inputs: tuple) -> None:
        self._inputs = tuple(None if x is None else x.detach().clone() for x in inputs)
        self._lrs = self._current_lrs()
        self._graphs = {}
        self.captures += 1
        agent = self.agent
        saved = copy.deepcopy(agent.state_dict())
        if not self.capture:  # the same warm-up and restore, eagerly: what the CPU tests check
            self._warm_up()
            agent.load_state_dict(saved)
            return
        side = torch.cuda.Stream(device=agent.device)
        side.wait_stream(torch.cuda.current_stream(agent.device))
        with torch.cuda.stream(side):
            self._warm_up()
        torch.cuda.current_stream(agent.device).wait_stream(side)
        for actor_step in (False, True):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):  # records the kernels; runs nothing
                outputs = agent._update_step(*self._inputs, actor_step=actor_step)
            self._graphs[actor_step] = (graph, outputs)
        agent.load_state_dict(saved)  # undo the warm-up, in place: the graphs point at these tensors

    def _warm_up(self) -> None:
        for _ in range(self.WARMUP):
            for actor_step in (False, True):
                self.agent._update_step(*self._inputs, actor_step=actor_step)
