"""The actor worker group as the driver sees it: ``actor.num_workers`` Ray actors, one update.

Every call goes to every actor process (their collectives pair up: gradient all-reduce, fsdp2's
gathers); rank 0 answers. :meth:`ActorGroup.connect` forms their process group first
(:mod:`.distributed`): rank 0 names its node's address and a free port, and all join there.
"""

from __future__ import annotations

from typing import Any


class ActorGroup:
    def __init__(self, handles: list[Any], parallel: str = "none"):
        if not handles:
            raise ValueError("an actor group needs at least one actor worker")
        self.handles = list(handles)
        self.parallel = parallel

    @property
    def main(self) -> Any:
        """Rank 0: it returns the weights and writes the checkpoints."""
        return self.handles[0]

    def connect(self, timeout_s: float = 600.0) -> None:
        """Form the actors' process group and wrap the policy (``actor.parallel`` ddp / fsdp2)."""
        import ray

        if self.parallel == "none":
            return
        address, port = ray.get(self.main.rendezvous.remote(), timeout=timeout_s)
        ray.get([h.join.remote(address, port) for h in self.handles], timeout=timeout_s)

    def get_weights(self) -> Any:
        """An ObjectRef of rank 0's :class:`~.weight_sync.WeightPayload` (fsdp2 gathers: all ranks)."""
        if self.parallel != "fsdp2":
            return self.main.get_weights.remote()
        refs = [h.get_weights.remote() for h in self.handles]  # every rank gathers; rank 0 keeps the payload
        return refs[0]

    def update(self, batch: Any, threads: float | None = None) -> dict[str, float]:
        """One update on ``batch`` (every process gets it whole and takes its share); rank 0's metrics."""
        import ray

        ref = ray.put(batch)
        share = threads / len(self.handles) if threads else None  # hybrid: the run's cores, split
        return ray.get([h.update.remote(ref, share) for h in self.handles])[0]

    def save(self, run_dir: str, iteration: int, metrics: dict, extra: dict) -> str:
        import ray

        return ray.get([h.save.remote(run_dir, iteration, metrics, extra) for h in self.handles])[0]

    def load(self, checkpoint: str) -> int:
        import ray

        return ray.get([h.load.remote(checkpoint) for h in self.handles])[0]
