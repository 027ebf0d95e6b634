"""Ray as the analysis backend: the same rows as a local run, a killed worker retried without
losing or doubling a row, Ctrl-C cancelling what is left, and no Ray import without --ray.

One local Ray instance (2 CPUs, no dashboard) serves the whole module and is shut down at its end.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from lightviz.analysis.mixed import allocate
from lightviz.analysis.parallel import LocalBackend, slices
from lightviz.analysis.ray_backend import RayBackend
from lightviz.analysis.sensitivity import sensitivity
from lightviz.analysis.sweep import SWEEP_COLUMNS, plan_label, plan_row, run_sweep, sweep_configs
from lightviz.cli import main
from lightviz.core.engine import Engine
from lightviz.io import datasets, zoo

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def backend():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # this module's test tasks travel by value
    with RayBackend(num_cpus=2) as started:
        yield started
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def cnn():
    bundle = zoo.load_model("digits-cnn")
    return bundle, datasets.subset(datasets.digits_split()[1], 120)


PLANS = sweep_configs([2, 4], ["symmetric", "asymmetric"], ["channel"], [0.0])


def test_ray_sweep_sensitivity_and_allocation_equal_the_local_run(backend, cnn):
    bundle, data = cnn
    seen = []
    remote = run_sweep(Engine(bundle.model), data, PLANS, backend=backend, progress=lambda i, n: seen.append((i, n)))
    pd.testing.assert_frame_equal(remote, run_sweep(Engine(bundle.model), data, PLANS), check_exact=True)
    assert seen == [(i, len(PLANS)) for i in range(1, len(PLANS) + 1)]

    local_sens = sensitivity(Engine(bundle.model), data, bits=[2, 4])
    steps = []
    remote_sens = sensitivity(Engine(bundle.model), data, bits=[2, 4], backend=backend,
                              progress=lambda i, n: steps.append((i, n)))
    pd.testing.assert_frame_equal(remote_sens, local_sens, check_exact=True)  # same rows, numbers and order
    assert remote_sens.attrs["reuse"] and steps[-1] == (len(local_sens), len(local_sens))
    assert len(slices(list(dict.fromkeys(local_sens["layer"])), backend.workers)) > 1  # really split in slices

    local_alloc = allocate(Engine(bundle.model), data, local_sens, avg_bits=3.0, refine=2)
    remote_alloc = allocate(Engine(bundle.model), data, local_sens, avg_bits=3.0, refine=2, backend=backend)
    assert remote_alloc.bits == local_alloc.bits and remote_alloc.evaluation == local_alloc.evaluation
    assert len(backend._puts) == 2  # the weights and the data went to the object store once for all of it


def _crash_once(marker: str, engine, data, plan):
    """plan_row, except that the first worker to evaluate 4-bit asymmetric dies on the spot."""
    if plan.default.quant.bits == 4 and plan.default.quant.scheme == "asymmetric" and not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)
    return plan_row(engine, data, plan)


def test_ray_retries_a_killed_worker_without_losing_or_doubling_a_row(backend, cnn, tmp_path):
    bundle, data = cnn
    marker = tmp_path / "crashed"
    rows = backend.map(functools.partial(_crash_once, str(marker)), Engine(bundle.model), data, PLANS)
    assert marker.exists()  # a worker did die mid-task
    got = pd.DataFrame(rows, columns=SWEEP_COLUMNS)
    assert got["label"].tolist() == [plan_label(plan) for plan in PLANS]  # every plan once, in order
    pd.testing.assert_frame_equal(got, run_sweep(Engine(bundle.model), data, PLANS), check_exact=True)


def _slow(folder: str, engine, data, item: int) -> int:
    if item:
        time.sleep(2.0)
        Path(folder, f"done-{item}").touch()
    return item


def test_ray_interrupt_cancels_the_remaining_tasks(backend, cnn, tmp_path):
    bundle, data = cnn
    engine = Engine(bundle.model)

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        backend.map(functools.partial(_slow, str(tmp_path)), engine, data, [0, 1, 2, 3], progress=interrupt)
    assert time.perf_counter() - started < 30
    time.sleep(4.0)  # uncancelled, tasks 1 and 2 would have finished by now
    assert sorted(path.name for path in tmp_path.iterdir()) == []
    assert backend.map(functools.partial(_slow, str(tmp_path)), engine, data, [0]) == [0]  # still usable


def test_cli_sweep_with_ray_writes_the_local_csv(backend, tmp_path, capsys):
    args = ["sweep", "--model", "digits-mlp", "--bits", "2,4", "--max-samples", "100"]
    assert main([*args, "--out", str(tmp_path / "local.csv")]) == 0
    assert main([*args, "--ray", "--out", str(tmp_path / "ray.csv")]) == 0  # joins this process's instance
    assert (tmp_path / "ray.csv").read_text() == (tmp_path / "local.csv").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local.csv", "ray.csv"]  # no temporary file left


def test_app_sweep_runs_on_ray_with_the_address_set(backend, monkeypatch):
    monkeypatch.setenv("LIGHTVIZ_RAY_ADDRESS", "auto")  # this process is connected: the app uses that instance
    at = AppTest.from_file("../app.py", default_timeout=120).run()
    at.switch_page("pages/tradeoffs.py").run()
    pills = {pill.key: pill for pill in at.get("button_group")}
    pills["sweep_bits"].set_value([2, 8])
    pills["sweep_schemes"].set_value(["symmetric"])
    pills["sweep_granularities"].set_value(["channel"])
    pills["sweep_sparsities"].set_value([0.0])
    next(b for b in at.button if b.label == "Run sweep").click().run()
    assert not at.exception and not at.error
    results = at.session_state["sweeps"]["digits-cnn"]["results"]
    engine, data = Engine(zoo.load_model("digits-cnn").model), datasets.eval_data_for(zoo.load_model("digits-cnn"))
    expected = run_sweep(engine, data, sweep_configs([2, 8], ["symmetric"], ["channel"], [0.0]))
    pd.testing.assert_frame_equal(results, expected, check_exact=True)


def test_bad_ray_settings_are_one_clear_message():
    for kwargs, expected in (({"num_cpus": 0}, "num_cpus must be a positive integer"),
                             ({"address": " "}, "address must be a Ray address"),
                             ({"device": "gpu"}, "device must be one of")):
        with pytest.raises(ValueError, match=expected):
            RayBackend(**kwargs)
    assert LocalBackend().map(lambda e, d, item: item * 2, None, None, [1, 2]) == [2, 4]


@pytest.mark.parametrize("argv, expected", [
    (["--ray-cpus", "2"], "--ray-cpus goes with --ray"),
    (["--ray", "auto", "--ray-cpus", "2"], "--ray-cpus sizes a local Ray instance"),
])
def test_cli_bad_ray_flags_exit_2_in_one_line(tmp_path, capsys, argv, expected):
    assert main(["sweep", "--model", "digits-mlp", "--bits", "4", "--max-samples", "20", *argv,
                 "--out", str(tmp_path / "r.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and not (tmp_path / "r.csv").exists()


def test_an_unreachable_cluster_is_one_clear_message_not_minutes_of_retries():
    from lightviz.analysis.ray_backend import _probe

    with pytest.raises(ValueError, match=r"could not reach the Ray cluster at '127.0.0.1:1': .*ray start --head"):
        _probe("127.0.0.1:1")
    _probe("auto")  # Ray finds (or fails to find) a local cluster itself, quickly


def test_without_ray_flag_nothing_imports_ray(tmp_path):
    code = ("import sys, runpy\n"
            "for argv in (['sweep', '--model', 'digits-mlp', '--bits', '4', '--max-samples', '50', '--out', sys.argv[1]],\n"
            "             ['sensitivity', '--model', 'digits-mlp', '--bits', '4', '--max-samples', '50', '--json']):\n"
            "    sys.argv = ['lightviz', *argv]\n"
            "    try:\n        runpy.run_module('lightviz', run_name='__main__')\n    except SystemExit as e:\n"
            "        assert e.code in (0, None), e.code\n"
            "print('RAY' if any(m == 'ray' or m.startswith('ray.') for m in sys.modules) else 'NO RAY', file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r.csv")], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.stderr.strip().splitlines()[-1] == "NO RAY", done.stderr
    assert (tmp_path / "r.csv").exists()


def test_cli_ctrl_c_leaves_no_partial_output(tmp_path, monkeypatch, capsys):
    import lightviz.analysis.sweep as sweep_module

    calls = []

    def interrupted(engine, data, plan, **kwargs):
        calls.append(plan)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return plan_row(engine, data, plan, **kwargs)

    monkeypatch.setattr(sweep_module, "plan_row", interrupted)
    out = tmp_path / "r.csv"
    out.write_text("an older complete result\n")
    assert main(["sweep", "--model", "digits-mlp", "--bits", "2,4,8", "--max-samples", "50", "--out", str(out)]) == 130
    assert out.read_text() == "an older complete result\n" and [p.name for p in tmp_path.iterdir()] == ["r.csv"]
    assert capsys.readouterr().err.startswith("lightviz: interrupted")
