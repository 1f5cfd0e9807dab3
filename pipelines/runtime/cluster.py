"""Ray for every job: join a cluster or start a local one, with one behaviour, and check it can host a job.

    ensure_ray(address)        RAY_ADDRESS / ``ray job submit`` / --address, else a new local Ray
    start_local_ray(num_cpus)  a new local Ray of a given size (tests, benchmarks)
    check_capacity(...)        a clear error when the cluster cannot host the requested actors/workers

Whichever way Ray starts, workers get ``WORKER_ENV`` (one thread per numeric library:
the tasks are the parallelism; librosa/numba and torch thread pools otherwise fight over
the cores; a local Ray adds a faster Ray Train health check, ``LOCAL_WORKER_ENV``) and the
process's Ray Data context gets the defaults every stage relies on.

The console is the job's: a local Ray keeps its workers' output (and Ray Train's and Ray Data's
internal messages) in its log files under /tmp/ray/session_latest/logs, and the driver's Ray and
Ray Data loggers print warnings and errors only (``RAY_DATA_LOGGING`` unless the user set
RAY_DATA_LOGGING_CONFIG). Progress reaches the console through the stages' own bars and lines.

A local Ray started here is reachable from this machine only: every server of the node (GCS,
raylet, object manager, workers, agents) listens on 127.0.0.1, since a local Ray has
authentication off and anyone who can reach it can run code on it. Joining a cluster
(``--address``, ``RAY_ADDRESS``) leaves its addresses to the cluster (cluster/README.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

# Worker environment: one thread per library, the tasks are the parallelism.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
# A local Ray's workers also poll faster in Ray Train's controller: it checks on its workers every 2 s by
# default, so a run's end (or a worker's failure) waits up to 2 s per poll to be seen; on one machine a
# poll is a few local calls. A cluster keeps its own setting.
LOCAL_WORKER_ENV = {**WORKER_ENV, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
# A local Ray's raylet settings. The raylet tells the driver's console that "too many" worker processes
# run once they exceed 4 x min(cores, CPUs) + 2 x max_io_workers: 16 on a 2-core machine with Ray's
# default of 4, while Ray Train's and Ray Data's own helper actors (controller, synchronisation,
# placement-group cleaner, preemption watcher, dataset manager, split coordinator, stats and
# autoscaling actors: about ten) beside the job's workers reach that in a plain 2-worker pretraining.
# Spill/restore workers start only when objects spill, so a higher cap costs nothing until then and
# moves the threshold to 24, above what our jobs start; an actor leak still reaches it.
LOCAL_RAY_SYSTEM_CONFIG = {"max_io_workers": 8}
# Ray Data's logging configuration for our processes: errors on the console, everything in its log file.
RAY_DATA_LOGGING = Path(__file__).with_name("ray_data_logging.yaml")


def ensure_ray(address: str | None = None) -> None:
    """Connect to a running cluster (``address``, or RAY_ADDRESS, which ``ray job submit`` sets) or start a
    local one on 127.0.0.1."""
    quiet_ray_data()
    import ray

    if not ray.is_initialized():
        local = address in (None, "local") and not os.environ.get("RAY_ADDRESS")
        with loopback_only() if local else nullcontext():  # a cluster's job log shows its workers' output
            ray.init(address="local" if local else address,
                     runtime_env={"env_vars": LOCAL_WORKER_ENV if local else WORKER_ENV},
                     log_to_driver=not local, logging_level=logging.WARNING,
                     **({"_system_config": LOCAL_RAY_SYSTEM_CONFIG} if local else {}))
    configure_data_context()


def start_local_ray(num_cpus: int, log_to_driver: bool = False, **options: Any) -> None:
    """A new local Ray on 127.0.0.1 with ``num_cpus`` CPUs and no dashboard, never a cluster some
    ``ray start`` left running."""
    quiet_ray_data()
    import ray

    with loopback_only():
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, runtime_env={"env_vars": LOCAL_WORKER_ENV},
                 log_to_driver=log_to_driver, logging_level=logging.WARNING, _system_config=LOCAL_RAY_SYSTEM_CONFIG,
                 **options)
    configure_data_context()


def quiet_ray_data() -> None:
    """Ray Data's logging configuration (``RAY_DATA_LOGGING``) for the driver, unless one is set; read when
    ``ray.data`` is first imported, so call it before. (Workers keep Ray Data's default: their output
    reaches the console only on a cluster, in the job's log.)"""
    os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", str(RAY_DATA_LOGGING))


@contextmanager
def loopback_only() -> Iterator[None]:
    """While a local Ray starts: Ray's single-machine mode, where the node's address is 127.0.0.1 and
    every server it starts listens there.

    Ray turns this mode on by itself on macOS and Windows (``ray_constants.ENABLE_RAY_CLUSTER``
    False; ``ray.init`` otherwise replaces a loopback ``_node_ip_address`` with the machine's
    routable address). It is read when the node starts, and restored after, so a later
    connection to a real cluster from this process is unaffected. tests/pipelines/runtime/
    test_cluster.py lists the sockets a job's local Ray listens on.
    """
    from ray._private import ray_constants

    if not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        raise RuntimeError("this Ray has no single-machine mode (ray_constants.ENABLE_RAY_CLUSTER): a local Ray "
                           "would listen on every interface; pin the Ray of pyproject.toml")
    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def configure_data_context() -> None:
    """Ray Data defaults of every stage: unordered by default (a stage that needs order asks for it on
    its dataset), the driver's own progress bar, and a worker that dies (e.g. a decoder crash on a
    corrupt file) loses its block, not the job: the stage reports what is missing."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = False
    ctx.enable_progress_bars = False
    ctx.max_errored_blocks = -1


def check_capacity(what: str, count: int, cpus_each: float, gpus_each: float, error: type[Exception],
                   spare_cpus: float = 1.0, spare_for: str = "the Ray Data tasks", hint: str = "") -> None:
    """``error`` when the running cluster cannot host ``count`` x (``cpus_each`` CPU, ``gpus_each`` GPU)
    and still leave ``spare_cpus`` CPUs for ``spare_for``."""
    import ray

    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    need_cpu, need_gpu = count * cpus_each, count * gpus_each
    if need_gpu > gpus:
        raise error(f"{count} {what} x {gpus_each:g} GPU need {need_gpu:g} GPUs; the cluster has {gpus:g}")
    if need_cpu + spare_cpus > cpus:
        spare = f" plus {spare_cpus:g} for {spare_for}" if spare_cpus else ""
        raise error(f"{count} {what} x {cpus_each:g} CPU need {need_cpu:g} CPUs{spare}; "
                    f"the cluster has {cpus:g}{f' ({hint})' if hint else ''}")
