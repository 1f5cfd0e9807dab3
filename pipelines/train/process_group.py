"""The training workers' process group, with its rendezvous store listening on one address only.

Ray Train sets up ``torch.distributed`` with ``env://``: rank 0 hosts a ``TCPStore`` that every
worker connects to at ``MASTER_ADDR`` (the node address Ray gives rank 0: 127.0.0.1 for a local
Ray, the node's private address on a cluster). torch's store binds its server to every interface
(``::``), whatever that address is, so during training anyone on the machine's networks could talk
to it. ``BoundTorchConfig`` installs, in each worker before the process group is set up, a store
factory that hands rank 0's store a socket bound to ``MASTER_ADDR`` itself (``master_listen_fd``):
the workers reach it exactly as before, nothing else can. The gloo and NCCL connections already
bind to the address the node name resolves to.

Both hooks are private APIs of the pinned versions (Ray 2.60.0's ``_TorchBackend``, torch's
``rendezvous._create_c10d_store``); ``tests/pipelines/demo/test_main_job.py`` lists the training
workers' sockets and fails if the store listens beyond 127.0.0.1 again.
"""

from __future__ import annotations

import socket
import warnings
from dataclasses import dataclass

from ray.train.torch import TorchConfig
from ray.train.torch.config import _TorchBackend


def bind_rendezvous_store() -> None:
    """In a training worker: rank 0's rendezvous store listens on its host address only (idempotent)."""
    import importlib

    import torch.distributed as dist

    rendezvous = importlib.import_module("torch.distributed.rendezvous")  # the module (the package's name is a function)

    create = rendezvous._create_c10d_store
    if getattr(create, "binds_host", False):
        return

    def create_bound(hostname, port, rank, world_size, timeout, use_libuv=True):
        if rank != 0 or rendezvous._torchelastic_use_agent_store():
            return create(hostname, port, rank, world_size, timeout, use_libuv)
        family = socket.AF_INET6 if ":" in hostname else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((hostname, port))
            listener.listen(512)
        except OSError as exc:  # an address not on this machine's interfaces (NAT): torch's own, on every interface
            listener.close()
            warnings.warn(f"rendezvous store: cannot listen on {hostname}:{port} ({exc}); listening on every "
                          "interface, as torch does", stacklevel=1)
            return create(hostname, port, rank, world_size, timeout, use_libuv)
        return dist.TCPStore(host_name=hostname, port=port, world_size=world_size, is_master=True, timeout=timeout,
                             multi_tenant=True, master_listen_fd=listener.detach(), use_libuv=use_libuv)

    create_bound.binds_host = True  # type: ignore[attr-defined]
    rendezvous._create_c10d_store = create_bound


class _BoundTorchBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config) -> None:
        worker_group.execute(bind_rendezvous_store)
        super().on_start(worker_group, backend_config)


@dataclass
class BoundTorchConfig(TorchConfig):
    """Ray Train's ``TorchConfig`` whose rendezvous store listens on the master address only."""

    @property
    def backend_cls(self):
        return _BoundTorchBackend
