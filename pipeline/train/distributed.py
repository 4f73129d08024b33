"""Multi-process training with ``torchrun``: DistributedDataParallel over ``ichct train``.

``ichct train`` started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) trains one model
with every process: :func:`distributed_run` initialises the process group (``nccl`` on CUDA,
``gloo`` on the CPU), :meth:`World.wrap` wraps the network in
:class:`~torch.nn.parallel.DistributedDataParallel` (BatchNorm becomes ``SyncBatchNorm`` on CUDA)
and :meth:`World.shard_loader` rebuilds the training loader with a
:class:`~torch.utils.data.distributed.DistributedSampler` (``set_epoch`` every epoch).

The semantics, as ``docs/training.md`` ("Multi-node training") describes them:

* ``batch_size`` is per process: one optimizer step sees ``batch_size x WORLD_SIZE`` studies
  (gradients averaged over the processes); the sampler pads the epoch to a multiple of the world
  size by repeating a few studies.
* Validation is sharded: rank ``r`` validates the validation studies ``r, r + WORLD_SIZE, ...``
  and the scores are gathered (MONAI's metrics all-gather theirs; the CT-level scores through
  :meth:`World.gather_objects`), so the metrics and thresholds are those of one process on the
  whole fold. The fold needs at least one validation study per process.
* Rank 0 alone resolves and checks the run (config, manifest, ``--resume``), writes the run
  folder (``config.json``, ``metrics.csv``, checkpoints, thresholds, tracking) and decides when
  the time budget stops the run; the others receive its decisions (:meth:`World.from_main`,
  :meth:`World.broadcast_floats`), so every rank stops after the same epoch and anneals the
  learning rate alike. The other ranks never touch the run folder: a node needs the images (or
  the preprocessed cache), not a shared run folder, and ``--resume`` ships rank 0's ``last.pt``
  to them.
* On the CPU BatchNorm stays per process (PyTorch's ``SyncBatchNorm`` needs GPUs): the
  segmenter uses instance normalisation and is unaffected; the classifier's BatchNorm then sees
  each rank's studies only.

Examples
--------
>>> world = World()  # a plain process: every helper is the identity
>>> world.enabled, world.is_main, world.from_main(sum, [1, 2])
(False, True, 3)
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from ichct.errors import IchctError

__all__ = ["World", "world_from_env", "distributed_run", "RankZeroFailed"]

logger = logging.getLogger("ichct.train")


class RankZeroFailed(IchctError):
    """Raised on the other ranks when rank 0 stopped the run before training (its error named)."""


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env.get(name, default))
    except ValueError:
        raise IchctError(f"environment variable {name} must be an integer, got {env.get(name)!r}") from None


@dataclasses.dataclass(frozen=True)
class World:
    """The processes of one training run (one process: ``world_size`` 1, every helper a no-op).

    Parameters
    ----------
    world_size, rank, local_rank
        As ``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``.
    backend
        The process group's backend (``"gloo"`` or ``"nccl"``) once initialised.
    """

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run folder."""
        return self.rank == 0

    def rank_seed(self, seed: int, epoch: int = 0) -> int:
        """The RNG seed of this rank: ``seed`` on rank 0 of a fresh run (so one process trains as
        before), another stream on every other rank (their augmentations differ)."""
        return (int(seed) + 1_000_003 * self.rank + int(epoch)) % 2**32

    def from_main(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` computed on rank 0 and sent to every rank; an error there stops every rank
        (:class:`RankZeroFailed` on the others, naming it)."""
        if not self.enabled:
            return fn(*args)
        import torch.distributed as dist

        box: list[Any] = [None]
        error: BaseException | None = None
        if self.is_main:
            try:
                box[0] = ("ok", fn(*args))
            except BaseException as exc:  # noqa: BLE001 - sent on, then raised here
                error, box[0] = exc, ("error", f"{type(exc).__name__}: {exc}")
        dist.broadcast_object_list(box, src=0)
        if error is not None:
            raise error
        status, value = box[0]
        if status == "error":
            raise RankZeroFailed(f"rank 0 stopped the run: {value}")
        return value

    def broadcast_floats(self, values: list[float]) -> list[float]:
        """Rank 0's ``values`` on every rank (the same length on every rank)."""
        if not self.enabled:
            return [float(v) for v in values]
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._tensor_device())
        dist.broadcast(t, src=0)
        return [float(v) for v in t.cpu().tolist()]

    def sum_over_ranks(self, *values: float) -> list[float]:
        """The sums of ``values`` over every rank."""
        if not self.enabled:
            return [float(v) for v in values]
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._tensor_device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(v) for v in t.cpu().tolist()]

    def gather_objects(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (picklable objects)."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def _tensor_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``model`` in ``DistributedDataParallel`` (BatchNorm -> ``SyncBatchNorm`` on CUDA); itself
        with one process. The wrapper shares ``model``'s parameters: checkpoints and validation keep
        using ``model``."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        if device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            return DistributedDataParallel(model, device_ids=[self.local_rank], output_device=self.local_rank)
        return DistributedDataParallel(model)

    def shard_loader(self, loader: Any, seed: int) -> Any:
        """``loader`` again over this rank's share of its dataset (a ``DistributedSampler``, shuffled
        with ``seed``; the same per-rank ``batch_size``, workers and collate function)."""
        if not self.enabled:
            return loader
        from monai.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(loader.dataset, num_replicas=self.world_size, rank=self.rank, shuffle=True,
                                     seed=int(seed), drop_last=False)
        return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                          num_workers=loader.num_workers, collate_fn=loader.collate_fn, drop_last=False)

    @staticmethod
    def attach_sampler_epoch(trainer: Any, loader: Any) -> None:
        """Call ``sampler.set_epoch(epoch)`` at the start of every epoch (a new shuffle each epoch)."""
        from ignite.engine import Events
        from torch.utils.data.distributed import DistributedSampler

        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, DistributedSampler):
            trainer.add_event_handler(Events.EPOCH_STARTED, lambda engine: sampler.set_epoch(engine.state.epoch))


def world_from_env(env: Mapping[str, str] | None = None) -> World:
    """The :class:`World` ``torchrun`` describes in the environment (one process without it).

    Examples
    --------
    >>> world_from_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "0"})
    World(world_size=2, rank=1, local_rank=0, backend=None)
    """
    env = os.environ if env is None else env
    size = _env_int(env, "WORLD_SIZE", 1)
    rank, local = _env_int(env, "RANK", 0), _env_int(env, "LOCAL_RANK", 0)
    if size < 1 or not 0 <= rank < size:
        raise IchctError(f"WORLD_SIZE={size} and RANK={rank} do not describe a process of the run")
    return World(world_size=size, rank=rank, local_rank=local)


@contextlib.contextmanager
def distributed_run(device: str) -> Iterator[World]:
    """The run's :class:`World`: with ``WORLD_SIZE`` > 1 the default process group is initialised
    (``torchrun``'s ``MASTER_ADDR``/``MASTER_PORT``; ``nccl`` for ``device`` cuda, each process on
    GPU ``LOCAL_RANK``; ``gloo`` on the CPU) and destroyed on exit (one already initialised is
    used and left alone).

    Examples
    --------
    >>> with distributed_run("cpu") as world:  # doctest: +SKIP
    ...     model = world.wrap(model, torch.device("cpu"))
    """
    world = world_from_env()
    if not world.enabled:
        yield world
        return
    import torch.distributed as dist

    cuda = torch.device(device).type == "cuda"
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(world.local_rank)
    started = not dist.is_initialized()
    if started:
        dist.init_process_group(backend=backend)
    else:
        backend = str(dist.get_backend())
    logger.info("rank %d of %d (%s)", world.rank, world.world_size, backend)
    try:
        yield dataclasses.replace(world, backend=backend)
        if started:  # no rank tears its process group down while another still talks to it
            dist.barrier()
    finally:
        if started:
            dist.destroy_process_group()
