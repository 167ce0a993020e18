"""Everything DDP in one place: init from torchrun's environment (or Ray Train's process group), rank queries,
reductions, and who this torchrun job is across its restarts."""
from __future__ import annotations

import os
import socket
from typing import Any

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init(device: torch.device) -> None:
    """gloo on CPU, nccl on GPU; a no-op outside torchrun, and where a launcher (Ray Train) made the group."""
    if not launched_by_torchrun() or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if restart_count() > 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        # torchrun's default (static) rendezvous keeps one store across restarts, and the dead attempt's gloo
        # addresses in it made the restarted ranks dial ports nobody listens on: each attempt gets its own keys.
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False)
        dist.init_process_group(backend=backend, store=dist.PrefixStore(f"ocula/attempt_{restart_count()}", store),
                                rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
        return
    dist.init_process_group(backend=backend)


def restart_count() -> int:
    """0 on torchrun's first attempt (and outside torchrun); N on its N-th restart after a lost worker."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def elastic_job() -> dict | None:
    """What stays the same across the restarts of one torchrun job, or None outside torchrun. The rendezvous id
    names a job (`--rdzv-id`, or a fresh uuid under `--standalone`); torchrun's default id is "none", and then
    the agent process that respawns the workers (this host, our parent) tells one job from the next."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id is None:
        return None
    if run_id != "none":
        return {"run_id": run_id}
    return {"run_id": run_id, "host": socket.gethostname(), "agent_pid": os.getppid()}


def local_device(requested: str) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and launched_by_torchrun():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(requested)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj: Any) -> list:
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    with torch.inference_mode(False):  # torch 2.4 fills its own buffers in place: not as inference tensors
        dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Rank 0's values of a module's parameters and buffers on every rank."""
    if world_size() > 1:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model under DDP and torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
