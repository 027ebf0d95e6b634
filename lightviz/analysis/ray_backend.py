"""Ray as an analysis backend: the same `map(task, engine, data, items)` as `parallel.LocalBackend`,
with each item a Ray task on a local Ray instance or a cluster.

Ray is imported only when a RayBackend starts: without `--ray` (CLI) or LIGHTVIZ_RAY_ADDRESS
(app), nothing imports it.

How a run goes:

1. **Once per model and data**: the float model (a CPU copy when the engine's is on a GPU)
   and the EvalData go to the object store with `ray.put`; every task gets the two references.
2. **Tasks**: one per item (a plan, a slice of layers). A worker builds one Engine from the
   references the first time it sees them and keeps it (and its caches: the float logits,
   compressed layers) for the next tasks it runs; at most `WORKER_ENGINES` per worker.
3. **Results stream back** as tasks finish (`ray.wait`); progress and `on_result` are called
   for each, and the list is assembled in item order, so the rows are those of a local run.
4. **Failures**: a worker that dies (killed, out of memory, a crash) has its task re-run by Ray
   up to `max_retries` times; only the run that finishes returns a result, so no row is lost
   or doubled. A task that raises gives its exception back to the caller as it was raised.
5. **Cancelling**: any exception while waiting (Ctrl-C, Streamlit stopping an obsolete run)
   cancels every task still queued or running (`ray.cancel(force=True)`) and propagates.

Where tasks run (`device`): "cpu" tasks take `cpus_per_task` CPUs; "cuda" tasks also take one
GPU each (Ray pins it); "auto" means "cuda" when the cluster has GPUs, else "cpu"; None follows
the engine's own device. A local instance is started with `num_cpus` CPUs (default: the CPUs
this process may use) and no dashboard; `close()` shuts down only an instance this backend
started. Joining a cluster (`address`) ships the lightviz package to its workers
(runtime_env py_modules); its nodes need the same torch and torchvision.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightviz.analysis.parallel import ProgressFn, ResultFn, Task
from lightviz.core.device import DEVICES
from lightviz.core.engine import Engine
from lightviz.core.evaldata import EvalData

ADDRESS_ENV = "LIGHTVIZ_RAY_ADDRESS"  # the app's Ray address ("local": start a local instance)
LOCAL = "local"
MAX_RETRIES = 3
WORKER_ENGINES = 2  # engines (model + caches) a worker keeps between tasks
PUT_ENTRIES = 4  # objects this driver keeps in the object store (LRU)
PROBE_TIMEOUT_S = 5.0  # an explicit address must accept a TCP connection within this
_PACKAGE = Path(__file__).resolve().parents[1]  # .../lightviz


def available_cpus() -> int:
    """CPUs this process may use (its affinity), for a local instance's default size."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class RayBackend:
    """Run analysis tasks with Ray (see the module's docstring).

    Args:
        address: a Ray cluster's address ("auto", "ray://host:10001", "host:6379"); None or
            "local" starts a private local instance.
        num_cpus: CPUs of a local instance (default: all this process may use).
        cpus_per_task: CPUs each task reserves (and torch threads it uses).
        device: "auto", "cpu", "cuda" for the tasks; None follows the engine's device.
        max_retries: re-runs of a task whose worker died.

    Raises:
        ValueError: bad settings; on `start()`, a cluster that cannot be reached.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, cpus_per_task: float = 1.0,
                 device: str | None = None, max_retries: int = MAX_RETRIES) -> None:
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ValueError(f"address must be a Ray address such as 'auto' or 'ray://host:10001'; got {address!r}")
        if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1):
            raise ValueError(f"num_cpus must be a positive integer; got {num_cpus!r}")
        if not (isinstance(cpus_per_task, (int, float)) and cpus_per_task > 0):
            raise ValueError(f"cpus_per_task must be a positive number; got {cpus_per_task!r}")
        if device is not None and device not in DEVICES and not str(device).startswith("cuda:"):
            raise ValueError(f"device must be one of {DEVICES} or None; got {device!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be a non-negative integer; got {max_retries!r}")
        self.address = None if address is None or address.strip() == LOCAL else address.strip()
        self.num_cpus = num_cpus
        self.cpus_per_task = float(cpus_per_task)
        self.device = device
        self.max_retries = max_retries
        self._owner = False  # whether this backend started Ray (and so shuts it down)
        self._puts: OrderedDict[int, tuple[object, Any]] = OrderedDict()

    # --- lifetime ---------------------------------------------------------------------------

    def __enter__(self) -> RayBackend:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> RayBackend:
        """Start a local instance or join the cluster (a no-op when this process is connected)."""
        ray = _ray()
        if ray.is_initialized():
            return self
        options = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR,
                   "configure_logging": True}
        if self.address is not None:
            _probe(self.address)  # Ray itself retries an unreachable address for minutes
        try:
            if self.address is None:
                pythonpath = os.pathsep.join(p for p in (str(_PACKAGE.parent), os.environ.get("PYTHONPATH")) if p)
                ray.init(num_cpus=self.num_cpus or available_cpus(),
                         runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, **options)
            else:
                ray.init(address=self.address, runtime_env={"py_modules": [str(_PACKAGE)]}, **options)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as error:
            where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray instance"
            raise ValueError(f"could not start or reach {where}: {_first_line(error)}") from None
        self._owner = True
        return self

    def close(self) -> None:
        """Drop this driver's objects; shut Ray down if this backend started it."""
        self._puts.clear()
        if self._owner:
            _ray().shutdown()
            self._owner = False

    # --- what the analyses see ------------------------------------------------------------------

    @property
    def workers(self) -> int:
        """Tasks that can run at once: the cluster's CPUs (GPUs for cuda tasks) per task."""
        resources = _ray().cluster_resources()
        if self._task_device(None)[1]:
            return max(1, int(resources.get("GPU", 0)))
        return max(1, int(resources.get("CPU", 1) // self.cpus_per_task))

    def describe(self) -> str:
        """One line, e.g. 'Ray (a local instance): 2 CPUs, 0 GPUs on 1 node'."""
        ray = _ray()
        resources, nodes = ray.cluster_resources(), len([n for n in ray.nodes() if n.get("Alive")])
        where = "a local instance" if self.address is None else self.address
        return (f"Ray ({where}): {int(resources.get('CPU', 0))} CPUs, {int(resources.get('GPU', 0))} GPUs "
                f"on {nodes} node{'s' if nodes != 1 else ''}")

    def map(self, task: Task, engine: Engine, data: EvalData, items: Sequence[Any], *,
            progress: ProgressFn | None = None, on_result: ResultFn | None = None) -> list:
        """task(engine, data, item) for every item as Ray tasks; the results in item order."""
        items = list(items)
        if not items:
            return []
        ray = _ray()
        self.start()
        refs = [self._put(engine.model, _cpu_copy), self._put(data)]  # in a list: Ray passes them unresolved
        device, gpus = self._task_device(engine)
        if gpus and not ray.cluster_resources().get("GPU", 0):  # Ray would wait for a GPU forever
            raise ValueError("the tasks need a CUDA GPU each (device cuda) and the Ray cluster has none; "
                             "use device 'auto' or 'cpu'")
        remote = _remote(ray).options(num_cpus=self.cpus_per_task, num_gpus=gpus, max_retries=self.max_retries,
                                      retry_exceptions=False)
        pending = {remote.remote(refs, device, task, item): index for index, item in enumerate(items)}
        results: list = [None] * len(items)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    index = pending.pop(ref)
                    results[index] = self._result(ray, ref, index)
                    if on_result is not None:
                        on_result(index, results[index])
                    if progress is not None:
                        progress(len(items) - len(pending), len(items))
        except BaseException:
            _cancel(ray, pending)
            raise
        return results

    # --- internals --------------------------------------------------------------------------------

    def _put(self, obj: object, convert=None) -> Any:
        """The object store reference of `obj` (or of `convert(obj)`), put once while it is among
        the last PUT_ENTRIES objects this backend put."""
        key = id(obj)
        hit = self._puts.get(key)
        if hit is not None and hit[0] is obj:
            self._puts.move_to_end(key)
            return hit[1]
        ref = _ray().put(obj if convert is None else convert(obj))
        self._puts[key] = (obj, ref)  # holding obj keeps its id from being reused
        while len(self._puts) > PUT_ENTRIES:
            self._puts.popitem(last=False)
        return ref

    def _task_device(self, engine: Engine | None) -> tuple[str, int]:
        """(device the worker resolves, GPUs each task reserves)."""
        choice = self.device
        if choice is None:
            choice = "cpu" if engine is None or engine.device.type != "cuda" else "cuda"
        if choice == "auto":
            choice = "cuda" if _ray().cluster_resources().get("GPU", 0) > 0 else "cpu"
        if choice.startswith("cuda"):
            return "cuda", 1  # Ray pins the task's GPU; inside it, it is "cuda"
        return "cpu", 0

    def _result(self, ray, ref, index: int):
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as error:  # the task raised: give back what it raised
            cause = getattr(error, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise RuntimeError(f"task {index} failed on a Ray worker: {_first_line(error)}") from None
        except ray.exceptions.RayError as error:  # e.g. the worker died more than max_retries times
            raise RuntimeError(f"task {index} could not finish on Ray after {self.max_retries} retries "
                               f"({type(error).__name__}): {_first_line(error)}") from None


# --- the worker's side -------------------------------------------------------------------------

_ENGINES: OrderedDict[tuple, tuple[Engine, EvalData]] = OrderedDict()


def run_task(refs: list, device: str, task: Task, item: Any) -> Any:
    """What a Ray worker runs: `task(engine, data, item)` with this worker's engine for `refs`."""
    key = (refs[0].hex(), refs[1].hex(), device)
    entry = _ENGINES.get(key)
    if entry is None:
        model, data = _ray().get(refs)
        entry = _ENGINES[key] = (Engine(model, device=device), data)
        while len(_ENGINES) > WORKER_ENGINES:
            _ENGINES.popitem(last=False)
    _ENGINES.move_to_end(key)
    return task(entry[0], entry[1], item)


_REMOTE: dict[str, Any] = {}


def _remote(ray):
    if "run_task" not in _REMOTE:
        _REMOTE["run_task"] = ray.remote(run_task)
    return _REMOTE["run_task"]


def _cpu_copy(model):
    """A float model as the object store gets it: on the CPU (each worker picks its device)."""
    if all(t.device.type == "cpu" for t in model.state_dict().values()):
        return model
    return copy.deepcopy(model).cpu()


def _cancel(ray, pending: dict) -> None:
    for ref in pending:
        try:
            ray.cancel(ref, force=True)
        except Exception:  # noqa: BLE001 - already finished or gone: nothing left to cancel
            pass


def _probe(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise ValueError when a 'host:port' or 'ray://host:port' address accepts no connection."""
    rest = address.split("://", 1)[-1]
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and friends: Ray finds the cluster itself, and says so quickly when there is none
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ValueError(f"could not reach the Ray cluster at {address!r}: {_first_line(error)}; "
                         "is it running (ray start --head) and is the port open?") from None


def _ray():
    import ray  # lazily: only a RayBackend in use imports Ray

    return ray


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return " ".join(text.splitlines()[0].split()) if text else type(error).__name__
