"""Where a command computes: its model's engine on the --device, Ray for many evaluations
(--ray), and a progress line on stderr.

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> ray_flags(parser)
>>> parser.parse_args(["--ray"]).ray
'local'
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator

from lightviz.cli.common import UsageError, device_choice, positive


def engine(args: argparse.Namespace, bundle):
    """The float model's Engine on the --device the flags name (`cuda` without CUDA: exit 2)."""
    from lightviz.core.engine import Engine

    return Engine(bundle.model, device=device_choice(args))


def ray_flags(parser: argparse.ArgumentParser) -> None:
    """--ray [ADDRESS] and --ray-cpus, for commands that evaluate many plans or layers."""
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="run the evaluations as Ray tasks: alone, start a local Ray instance; with an "
                             "address ('auto', 'ray://host:10001'), join that cluster. Ray is imported only then")
    parser.add_argument("--ray-cpus", type=int, help="CPUs of the local Ray instance (default: all this process "
                                                     "may use); each task takes one")


@contextlib.contextmanager
def backend(args: argparse.Namespace) -> Iterator:
    """Where the command's evaluations run: here, or Ray (--ray), shut down when done."""
    from lightviz.analysis.parallel import LocalBackend

    if getattr(args, "ray", None) is None:
        if getattr(args, "ray_cpus", None) is not None:
            raise UsageError("--ray-cpus goes with --ray (a local Ray instance)")
        yield LocalBackend()
        return
    from lightviz.analysis.ray_backend import LOCAL, RayBackend

    cpus = positive(args.ray_cpus, "ray-cpus")
    if cpus is not None and args.ray != LOCAL:
        raise UsageError("--ray-cpus sizes a local Ray instance; a cluster (--ray ADDRESS) has its own")
    with RayBackend(None if args.ray == LOCAL else args.ray, num_cpus=cpus, device=device_choice(args)) as ray:
        yield ray


def progress_printer(enabled: bool, unit: str) -> Callable[[int, int], None]:
    """A (done, total) callback drawing 'i/n unit' on one line of stderr when enabled."""
    def report(done: int, total: int) -> None:
        if enabled:
            print(f"\r{done}/{total} {unit}", end="" if done < total else "\n", file=sys.stderr, flush=True)
    return report
