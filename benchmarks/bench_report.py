"""Speed and size of the self-contained HTML report, in one run. Budget: under 3 s for
digits-cnn with every section.

"Every section": a 16-plan sweep plus a session history of 5 plans on the trade-off chart,
plan A against the plan, a sensitivity heatmap (4 layers x 3 bit-widths) and a fine-tune
curve (3 epochs), i.e. what a session that ran all of them hands to "Download report". The
timed step is what the report button does: `collect_report` (evaluates the plan and plan A,
the layer tables, the damaged layers' histograms, the Pareto front) and `render_report` (the
figures, the HTML, the inlined Plotly). Computing the sweep, the sensitivity and the
fine-tune is the analyses' own cost, printed apart.

Reference, in the same run: Plotly's own way to make one self-contained chart,
`plotly.io.to_html(fig, include_plotlyjs=True)` of the trade-off figure: the ratio says what
a whole report costs against one standalone Plotly chart. Wall and CPU seconds are printed
(CPU time is steadier on a shared machine), with the load average.

Run: .venv/bin/python benchmarks/bench_report.py
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BUDGET_S = 3.0
REPEATS = 5


def timed(fn, repeats: int = REPEATS) -> tuple[float, float, object]:
    """(median wall s, median CPU s, last result) of fn() over `repeats` runs."""
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), result


def main() -> None:
    import pandas as pd
    import plotly.io as pio

    from lightviz.analysis.report import TrainingSection, collect_report
    from lightviz.analysis.sensitivity import sensitivity
    from lightviz.analysis.sweep import plan_row, run_sweep, sweep_configs
    from lightviz.core.engine import Engine, uniform_plan
    from lightviz.io import datasets, zoo
    from lightviz.plots.report import render_report
    from lightviz.plots.report_page import plotly_js
    from lightviz.plots.tradeoffs import tradeoff_figure
    from lightviz.recover.finetune import finetune

    bundle = zoo.load_model("digits-cnn")
    engine, data = Engine(bundle.model), datasets.eval_data_for(bundle)
    plan, pinned = uniform_plan(3, "asymmetric", "channel"), uniform_plan(8)

    start = time.perf_counter()
    sweep = run_sweep(engine, data, sweep_configs([2, 3, 4, 8], ["symmetric", "asymmetric"], ["tensor", "channel"],
                                                  [0.0], base=plan))
    history = pd.DataFrame([plan_row(engine, data, uniform_plan(b, sparsity=s)) for b in (4, 6) for s in (0.0, 0.5)]
                           + [plan_row(engine, data, plan)])
    sens = sensitivity(engine, data, [2, 4, 8], base=plan)
    tuned = finetune(bundle.model, plan, datasets.digits_split()[0], data, epochs=3)
    training = TrainingSection("finetune", "digits-cnn", tuned.history, tuned.accuracy_before, tuned.accuracy_after,
                               tuned.float_accuracy, {"epochs": 3, "seed": 0}, tuned.size_bytes)
    analyses_s = time.perf_counter() - start
    arguments = dict(engine=engine, bundle=bundle, data=data, plan=plan, sweep=sweep, history=history,
                     sensitivity=sens, training=training, pinned=pinned)

    plotly_js()  # read once per process, as a running app has
    cold_engine = Engine(bundle.model)  # first report of a plan: nothing cached in the engine
    cold_wall, cold_cpu = time.perf_counter(), time.process_time()
    render_report(collect_report(**(arguments | {"engine": cold_engine})))
    cold_wall, cold_cpu = time.perf_counter() - cold_wall, time.process_time() - cold_cpu
    collect_wall, collect_cpu, report = timed(lambda: collect_report(**arguments))
    render_wall, render_cpu, html = timed(lambda: render_report(report))
    total_wall, total_cpu, _ = timed(lambda: render_report(collect_report(**arguments)))
    ev = report.evaluation
    fig = tradeoff_figure(sweep, "accuracy", None, (ev.float_size_bytes, ev.float_accuracy),
                          (ev.size_bytes, ev.accuracy, report.plan_label), history)
    ref_wall, ref_cpu, ref_html = timed(lambda: pio.to_html(fig, include_plotlyjs=True, full_html=True))

    size = len(html.encode())
    js = len(plotly_js().encode())
    copies = len(re.findall(r"\* plotly\.js v\d+\.\d+\.\d+", html))
    charts = html.count('class="chart"')
    print(f"digits-cnn, every section ({charts} charts); load average {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} cores")
    print(f"  computing the sections (sweep, history, sensitivity, 3-epoch fine-tune): {analyses_s:.1f} s")
    print(f"  report, first time (cold engine):  {cold_wall:.2f} s wall, {cold_cpu:.2f} s CPU")
    print(f"  report (median of {REPEATS}):           {total_wall:.2f} s wall, {total_cpu:.2f} s CPU "
          f"(collect {collect_wall:.2f} s, render {render_wall:.2f} s)")
    print(f"  reference: one standalone Plotly chart (to_html, JS inlined): {ref_wall:.3f} s wall, "
          f"{ref_cpu:.3f} s CPU, {len(ref_html.encode()) / 2**20:.2f} MiB")
    print(f"  ratio report / one standalone chart: {total_wall / ref_wall:.1f}x wall, {total_cpu / ref_cpu:.1f}x CPU")
    print(f"  file: {size / 2**20:.2f} MiB = Plotly JS {js / 2**20:.2f} MiB (copies in the file: {copies}) "
          f"+ report {(size - js) / 2**10:.0f} KiB; {charts} standalone charts would hold {charts} copies "
          f"({charts * js / 2**20:.1f} MiB of JS)")
    verdict = "within" if max(cold_wall, total_wall) < BUDGET_S else "OVER"
    print(f"  budget {BUDGET_S:.0f} s: {verdict} (slowest of cold and warm: {max(cold_wall, total_wall):.2f} s)")


if __name__ == "__main__":
    main()
