"""Distributed data-parallel training under ``torchrun``: ranks, process group, collectives.

:func:`~torchshrink.train.train` calls :func:`init_distributed` itself, so a script that runs in
one process also runs under ``torchrun --nproc_per_node=N`` unchanged. ``torchrun`` sets
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them (or with ``WORLD_SIZE=1``) every
function here is a no-op that returns its input, so single-process code pays nothing.

The process group is created once per process, with gloo for CPU tensors and, where CUDA is
available, NCCL for CUDA tensors (``"cpu:gloo,cuda:nccl"``), and destroyed at exit (or at the
end of :func:`distributed_session` if that created it).

Example:
    >>> import torch
    >>> is_main(), world_size()
    (True, 1)
    >>> sync_from_main(torch.ones(2)).tolist()  # one process: returned as is
    [1.0, 1.0]
    >>> all_reduce_mean([0.5, 2.0])
    [0.5, 2.0]
"""

from __future__ import annotations

import atexit
import math
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, overload

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

T = TypeVar("T")

_OWNED = {"pg": False}  # whether this module created the process group (and must destroy it)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip().lstrip("-").isdigit() else default


def world_size() -> int:
    """Number of processes: the process group's size, else ``WORLD_SIZE``, else 1.

    Example:
        >>> world_size()
        1
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return max(_env_int("WORLD_SIZE", 1), 1)


def rank() -> int:
    """Global rank of this process (0 outside ``torchrun``).

    Example:
        >>> rank()
        0
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return _env_int("RANK", 0)


def local_rank() -> int:
    """Rank of this process on its machine (``LOCAL_RANK``; picks the GPU).

    Example:
        >>> local_rank()
        0
    """
    return _env_int("LOCAL_RANK", 0)


def is_distributed() -> bool:
    """True under ``torchrun`` with more than one process.

    Example:
        >>> is_distributed()
        False
    """
    return world_size() > 1


def is_main() -> bool:
    """True on rank 0, the one process that writes files and draws progress bars.

    Works before the process group exists (it reads ``RANK``), so guards may run early.

    Example:
        >>> is_main()
        True
    """
    return rank() == 0


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``; a bare ``"cuda"`` becomes this process's GPU.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and is_distributed():
        dev = torch.device("cuda", local_rank())
    return dev


def init_distributed(device: str | torch.device = "cpu") -> bool:
    """Join the process group once (idempotent); return whether training is distributed.

    Args:
        device: the training device; a CUDA device is made this process's current GPU.

    Example:
        >>> init_distributed("cpu")  # not under torchrun
        False
    """
    if not is_distributed() or not dist.is_available():
        return False
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        _bind_no_group_defaults()
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        _OWNED["pg"] = True
        atexit.register(shutdown_distributed)
    return True


def _bind_no_group_defaults() -> None:
    """Import ``torch.distributed.nn.functional`` while no process group exists.

    Its functions take ``group=group.WORLD`` as a default argument, evaluated at import: imported
    after ``init_process_group`` (``DistributedDataParallel`` imports it through
    ``torch._dynamo``), they capture the default group for the life of the process, and
    ``destroy_process_group`` can no longer free it. Its gloo worker threads then run on into
    interpreter shutdown, where one still releasing the last collective's tensors needs the GIL
    and aborts the process ("terminate called without an active exception", SIGABRT). Imported
    first, the defaults are ``None`` and the group is freed, its threads joined, at shutdown.
    """
    import torch.distributed.nn.functional  # noqa: F401


def shutdown_distributed(clean: bool | None = None) -> None:
    """Destroy the process group if :func:`init_distributed` created it (idempotent).

    On a clean exit the ranks first meet at a barrier, so none tears its connections down
    while a peer is still using them. A rank leaving on an unhandled exception skips the
    barrier rather than wait for peers that will never arrive. Destroying the group joins its
    worker threads (see :func:`_bind_no_group_defaults` for what used to keep it alive).

    Args:
        clean: whether this rank is leaving normally; ``None`` (the exit hook) reads it from
            whether Python recorded an unhandled exception.

    Example:
        >>> shutdown_distributed()  # nothing to do outside torchrun
    """
    if not (_OWNED["pg"] and dist.is_initialized()):
        _OWNED["pg"] = False
        return
    if clean is None:
        clean = getattr(sys, "last_value", None) is None
    if clean:
        try:
            dist.barrier()
        except RuntimeError:  # a peer is already gone: tear down anyway
            pass
    dist.destroy_process_group()
    _OWNED["pg"] = False


@contextmanager
def distributed_session(device: str | torch.device = "cpu") -> Iterator[bool]:
    """Join the process group for the block and tear it down cleanly at its end.

    Yields whether the block runs distributed. A group that existed before is left alone.

    Example:
        >>> with distributed_session() as on:
        ...     on
        False
    """
    owned_before = _OWNED["pg"] or (dist.is_available() and dist.is_initialized())
    on = init_distributed(device)
    try:
        yield on
    except BaseException:
        if on and not owned_before:
            shutdown_distributed(clean=False)
        raise
    if on and not owned_before:
        shutdown_distributed(clean=True)


def _ready() -> bool:
    # Collectives may run before train() (e.g. a pruner's first step): join lazily.
    return init_distributed() if is_distributed() else False


def _comm_device() -> torch.device:
    # Our group moves CPU tensors with gloo; one made by the user with backend="nccl" only
    # moves CUDA tensors.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait until every rank gets here (no-op in one process).

    Example:
        >>> barrier()
    """
    if _ready():
        dist.barrier()


@torch.no_grad()
def _broadcast_tensor_(t: torch.Tensor) -> None:
    dev = _comm_device()
    # gloo has no bool collectives: bool tensors travel as uint8.
    buf = t.to(device=dev, dtype=torch.uint8 if t.dtype == torch.bool else t.dtype).contiguous()
    dist.broadcast(buf, src=0)
    t.copy_(buf.to(device=t.device, dtype=t.dtype))


def broadcast_module_state(module: nn.Module) -> nn.Module:
    """Copy rank 0's parameters and buffers into ``module`` on every rank (in place).

    Example:
        >>> broadcast_module_state(nn.Linear(2, 2)).out_features
        2
    """
    if _ready():
        for t in [*module.parameters(), *module.buffers()]:
            _broadcast_tensor_(t.data)
    return module


@overload
def sync_from_main(obj: nn.Module) -> nn.Module: ...
@overload
def sync_from_main(obj: torch.Tensor) -> torch.Tensor: ...
@overload
def sync_from_main(obj: T) -> T: ...
def sync_from_main(obj: Any) -> Any:
    """Rank 0's value of ``obj`` on every rank; ``obj`` itself in one process.

    Tensors and modules are overwritten in place (their shapes must agree across ranks);
    anything else (dicts of masks, lists of kept indices of any length, dataclasses) is
    pickled on rank 0 and the copy is returned. Use it after a rank-local computation whose
    result must be identical everywhere, e.g. pruning masks or k-means codebooks.

    Example:
        >>> sync_from_main({"fc.weight": torch.ones(2, dtype=torch.bool)})["fc.weight"].tolist()
        [True, True]
    """
    if not _ready():
        return obj
    if isinstance(obj, nn.Module):
        return broadcast_module_state(obj)
    if isinstance(obj, torch.Tensor):
        _broadcast_tensor_(obj.data)
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0, device=_comm_device())
    return box[0]


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum ``values`` over ranks, in place, and return it.

    Example:
        >>> all_reduce_sum(torch.tensor([1.0, 2.0])).tolist()
        [1.0, 2.0]
    """
    if _ready():
        buf = values.to(_comm_device())
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        values.copy_(buf)
    return values


def all_reduce_mean(values: float | Sequence[float]) -> Any:
    """The mean over ranks of a float or a list of floats (e.g. metrics for the history).

    Example:
        >>> all_reduce_mean(0.25)
        0.25
    """
    if isinstance(values, (int, float)):
        return all_reduce_mean([values])[0] if _ready() else values
    if not _ready():
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64)
    return (all_reduce_sum(t) / world_size()).tolist()


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any rank (keeps stop decisions in step).

    Example:
        >>> any_rank(False)
        False
    """
    if not _ready():
        return flag
    return bool(all_reduce_sum(torch.tensor([float(flag)], dtype=torch.float64))[0] > 0)


class ShardSampler(DistributedSampler):  # type: ignore[type-arg]
    """A ``DistributedSampler`` whose shuffle is the one of ``DataBundle.loader(seed=...)``.

    Each epoch (:meth:`set_epoch`) draws a permutation from a generator seeded with
    ``seed + epoch`` exactly as a single-process ``DataLoader`` does (it first draws its
    workers' base seed from the generator, then shuffles), pads it to a multiple of the world
    size by repeating its first indices, and gives rank ``r`` every ``W``-th index from ``r``.

    Example:
        >>> s = ShardSampler(range(6), num_replicas=2, rank=0, seed=1)
        >>> s.set_epoch(0); len(list(s))
        3
    """

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        # The DataLoader's base-seed draw, so that the permutation is the single-process one.
        torch.empty((), dtype=torch.int64).random_(generator=g)
        n = len(self.dataset)  # type: ignore[arg-type]
        perm = torch.randperm(n, generator=g).tolist()
        perm += (perm * math.ceil(self.total_size / max(n, 1)))[: self.total_size - n]
        return iter(perm[self.rank : self.total_size : self.num_replicas])


def shard_loader(
    dataset: Dataset[Any],
    *,
    batch_size: int,
    seed: int,
    epoch: int = 0,
    num_replicas: int | None = None,
    replica: int | None = None,
) -> DataLoader[Any]:
    """This rank's shuffled shard of ``dataset``, in per-rank batches of ``ceil(batch_size / W)``.

    ``batch_size`` is the global batch. With a :class:`ShardSampler`, when ``W`` divides
    ``batch_size`` the ranks' ``k``-th batches together are exactly the ``k``-th batch of
    ``DataBundle.loader(batch_size=batch_size, seed=seed + epoch)`` (the last one padded to a
    multiple of ``W``), and every rank has the same number of batches. ``num_replicas`` /
    ``replica`` default to the world size and this process's rank.

    Example:
        >>> ds = torch.utils.data.TensorDataset(torch.arange(8))
        >>> loader = shard_loader(ds, batch_size=4, seed=0, num_replicas=2, replica=1)
        >>> [b[0].tolist() for b in loader]
        [[3, 7], [6, 0]]
    """
    w = world_size() if num_replicas is None else num_replicas
    r = rank() if replica is None else replica
    sampler = ShardSampler(dataset, num_replicas=w, rank=r, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return DataLoader(dataset, batch_size=math.ceil(batch_size / w), sampler=sampler)


def wrap_ddp(model: nn.Module, device: torch.device, *, find_unused: bool = True) -> nn.Module:
    """``model`` inside ``DistributedDataParallel`` (rank 0's state is broadcast on wrapping).

    A model with nothing to train is only synchronised and returned as is.

    Args:
        model: the model (its parameters already on ``device``).
        device: this rank's device.
        find_unused: allow parameters that get no gradient in a step (the float weight of a
            quantized layer, a branch behind control flow); costs a graph walk per step.

    Example:
        >>> wrap_ddp(nn.Linear(2, 2), torch.device("cpu")).out_features  # one process
        2
    """
    if not any(p.requires_grad for p in model.parameters()):
        return broadcast_module_state(model)
    if not _ready():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def unwrap_ddp(model: nn.Module) -> nn.Module:
    """The module inside a wrapper from :func:`wrap_ddp`, with DDP's gradient hooks removed.

    Without this, a later backward pass on the bare model (a gradient-based pruning score,
    another ``train()`` call) would still trigger the old wrapper's gradient reduction.

    Example:
        >>> m = nn.Linear(2, 2)
        >>> unwrap_ddp(m) is m
        True
    """
    from torch.nn.parallel import DistributedDataParallel

    if not isinstance(model, DistributedDataParallel):
        return model
    model._remove_autograd_hooks()
    return model.module
