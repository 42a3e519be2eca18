"""``make bench``: the engine's performance figures, each measured in this run, written to ``var/bench``.

1. bar close → orders at the paper broker through the sensor path (``dagster dev`` on 127.0.0.1, the
   accelerated clock, the sensor, a queued run per bar): wall time from the bar's close on the market clock to
   the ``executions`` record; p50 over the bars traded;
2. the same through a long-lived in-process engine (the trading job called in process, one bar after another);
3. one bar's Dagster run vs the pure chain for the same bar (the overhead ratio);
4. replay throughput at ``--symbols`` (100) symbols over ``--sessions`` sessions, projected to a year;
5. the lineage write cost per bar as a share of the bar's compute, and DuckDB bytes per symbol-bar;
6. the pure chain at 50 / 500 / 5 000 symbols (``dagster_project/commands/bench_chain.py``);
7. the ``files`` source: its load time and its per-bar cost (the ``bars`` window: history slice, ADV, skips,
   validation) for files of two lengths, which must not grow with the files' length (issue 10);
8. the scale table: a live bar at 50 / 500 / 5 000 symbols, warm and in a fresh process, lineage bytes and the
   longest reader wait (``dagster_project/commands/bench_scale.py``; ``--skip-scale`` to leave it out).
Models: a small registry trained for the benchmark (the registry shape and inference cost do not depend on
how long the models were trained).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from CONFIG.config_loader import PROJECT_ROOT, reset_config, resolve_path

TRADING_DAYS_PER_YEAR = 252  # a definition (the annualisation convention), not a tunable
# The sensor-path bench runs the market clock at SENSOR_BENCH_SPEED× so a 5-minute bar lasts 300/17 ≈ 17.6 s.
# Dagster's daemon evaluates sensors in a loop of at least 5 s, so a bar close waits a uniform 0–5 s to be
# noticed; at 20× (15 s bars) every bar landed at the same phase of that loop and the p50 measured one
# phase. At 17× consecutive bars land at phases 2.6 s apart, so the p50 covers the loop's spread.
SENSOR_BENCH_SPEED = 17
SENSOR_BENCH_BARS = 8


def _env(home: Path, registry: Path, **extra: str) -> None:
    """A fresh home for one benchmark, with its live and replay kill switches armed (``init``)."""
    import datetime as dt

    from resources.kill_switch.resource import switch_for

    os.environ["TRADEGRAPH_HOME"] = str(home)
    os.environ["TRADEGRAPH__PATHS__REGISTRY"] = str(registry)
    for k, v in extra.items():
        os.environ[k] = v
    reset_config()
    for account in ("live", "replay"):
        switch_for(account).init(dt.datetime.now(dt.UTC), "make bench")


def bench_sensor_path(work: Path, registry: Path, bars_wanted: int = SENSOR_BENCH_BARS,
                      timeout_s: float = 400) -> dict:
    """Start the real UI launcher (webserver + daemon), let the sensor trade, time bar close → executions."""
    import socket

    from resources.lineage.store import LineageStore
    from resources.market.calendar import parse_bar_key
    from TRAINING.common.utils.file_utils import read_json

    home = work / "sensor"
    home.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, DAGSTER_HOME=str(home / "dagster_home"), TRADEGRAPH_HOME=str(home),
               TRADEGRAPH__PATHS__REGISTRY=str(registry), TRADEGRAPH__CLOCK__SPEED=str(SENSOR_BENCH_SPEED),
               TRADEGRAPH__ORCHESTRATION__SENSOR_INTERVAL_SECONDS="1")
    log = open(home / "dagster_dev.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "dagster_project.commands.ui", "--port", str(port)], cwd=PROJECT_ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _env(home, registry)
    store = LineageStore(retry_seconds=2)
    rows = pd.DataFrame()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            time.sleep(3)
            try:
                rows = store.read_sql("SELECT bar, min(recorded_at) AS at FROM materializations "
                                      "WHERE asset = 'executions' GROUP BY bar ORDER BY bar")
            except Exception:  # not created yet, or a run holds it: poll again
                continue
            if len(rows) >= bars_wanted:
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
    clock = read_json(home / "var" / "clock.json")
    wall0, mkt0, speed = (pd.Timestamp(clock["wall_start"]), pd.Timestamp(clock["market_start"]),
                          float(clock["speed"]))
    lat = [(pd.Timestamp(at).tz_convert("UTC") - (wall0 + (parse_bar_key(b) - mkt0) / speed)).total_seconds()
           for b, at in zip(rows["bar"], rows["at"], strict=True)]
    return {"bars": len(lat), "latency_s": lat, "p50_s": statistics.median(lat) if lat else None}


def bench_in_process(work: Path, registry: Path, n: int = 8) -> dict:
    """A long-lived process calling the trading job in process, bar after bar (live mode, clock at each bar)."""
    import dagster as dg

    from dagster_project.commands.audit import QUIET
    from dagster_project.commands.replay import ReplayEngine
    from dagster_project.definitions import defs
    from resources.launch_proof import signed_tags
    from resources.market.calendar import bar_key, get_calendar
    from resources.market.clock import start_accelerated_clock

    home = work / "inproc"
    _env(home, registry, TRADEGRAPH__CLOCK__MODE="accelerated")
    keys = [bar_key(t) for t in get_calendar().session_bars("2025-06-03")[: n + 2]]
    job = defs.resolve_job_def("trading_job")
    times = []
    with dg.DagsterInstance.ephemeral() as instance:
        for key in keys:
            start_accelerated_clock(pd.Timestamp(key.replace("Z", "+00:00")), speed=1.0)
            t = time.perf_counter()
            job.execute_in_process(partition_key=key, instance=instance, run_config=QUIET, raise_on_error=True,
                                   tags=signed_tags(key))  # the engine signs its live launches
            times.append(time.perf_counter() - t)
    times = times[2:]  # the first runs pay imports and model loading
    _env(work / "pure", registry)
    engine = ReplayEngine(record=False)
    pure = []
    for key in keys:
        t = time.perf_counter()
        engine.step(key)
        pure.append(time.perf_counter() - t)
    engine.close()
    pure = pure[2:]
    os.environ.pop("TRADEGRAPH__CLOCK__MODE", None)
    return {"bars": len(times), "p50_s": statistics.median(times), "pure_chain_p50_s": statistics.median(pure),
            "overhead_ratio": statistics.median(times) / statistics.median(pure)}


def bench_replay(work: Path, registry: Path, symbols: int, sessions: int) -> dict:
    from dagster_project.commands.replay import ReplayEngine, bars_between
    from resources.market.calendar import get_calendar

    home = work / "replay"
    _env(home, registry, TRADEGRAPH__SIMULATOR__N_SYMBOLS=str(symbols))
    days = get_calendar().sessions("2025-06-02", "2025-12-31")[:sessions]
    bars = bars_between(days[0].isoformat(), days[-1].isoformat())
    result = ReplayEngine().run(bars)
    stage = result.stage_seconds
    lineage = stage.get("lineage", 0.0)
    compute = sum(v for k, v in stage.items() if k != "lineage")
    size = resolve_path("paths.lineage_db").stat().st_size
    os.environ.pop("TRADEGRAPH__SIMULATOR__N_SYMBOLS", None)
    per_bar = result.seconds / len(bars)
    return {"symbols": symbols, "bars": len(bars), "seconds": result.seconds, "ms_per_bar": per_bar * 1e3,
            "projected_year_s": per_bar * TRADING_DAYS_PER_YEAR * get_calendar().bars_per_full_session(), "lineage_share_of_compute": lineage / compute,
            "stage_ms_per_bar": {k: v / len(bars) * 1e3 for k, v in sorted(stage.items())},
            "duckdb_bytes": size, "bytes_per_symbol_bar": size / (len(bars) * symbols)}


def bench_inference_floor(registry: Path, symbols: int, rows: int = 20_000, seed: int = 0) -> dict:
    """Every model's inference on one large batch of rows (the best case for any replay design, however it
    is vectorised across bars), projected to a year of bars × ``symbols``: a floor for replay throughput."""
    import numpy as np

    from assets.predictions.models import load_models
    from CONFIG.config_loader import use_config
    from resources.market.calendar import get_calendar

    with use_config({"paths": {"registry": str(registry)}}):
        models = load_models()
    rng = np.random.default_rng(seed)
    us_per_row = {}
    for (target, family), m in sorted(models.models.items()):
        nf = len(m.meta["features"])
        x = rng.standard_normal((rows, m.T, nf) if m.kind == "sequential" else (rows, nf))
        m.predict(x[:64])  # warm
        t = time.perf_counter()
        m.predict(x)
        us_per_row[f"{target}/{family}"] = (time.perf_counter() - t) / rows * 1e6
    year_rows = TRADING_DAYS_PER_YEAR * get_calendar().bars_per_full_session() * symbols
    total = sum(us_per_row.values())
    return {"rows": rows, "us_per_symbol_bar": total, "year_symbol_bars": year_rows,
            "year_s": total * year_rows / 1e6, "per_model_us": us_per_row}


def bench_files_source(work: Path, symbols: int = 50, lengths: tuple[int, ...] = (20, 120),
                       bars: int = 30) -> dict:
    """The files source on the embedded market's bars written as CSV, ``lengths`` sessions long: load time and the
    median per-bar cost of the ``bars`` window (history slice, ADV, skips, validation) over the last session's
    first ``bars`` bars; the lengths are measured bar by bar in turn, so machine noise hits both alike."""
    from resources.market.calendar import bar_key, get_calendar
    from resources.market.files import FilesSource
    from resources.market.simulator import MarketSimulator

    reset_config()
    sim = MarketSimulator()
    days = get_calendar().sessions(None, "2025-06-30")
    out: dict = {"symbols": symbols, "bars": bars, "lengths": {}}
    markets = {}
    for n in lengths:
        frame = pd.concat([sim.session_frame(d) for d in days[-n:]], ignore_index=True)
        frame = frame[frame["symbol"].isin(sim.symbols[:symbols])]
        d = work / f"files_{n}"
        d.mkdir()
        for sym, g in frame.groupby("symbol"):
            g.drop(columns="symbol").assign(ts=g["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(d / f"{sym}.csv",
                                                                                                  index=False)
        t = time.perf_counter()
        markets[n] = _files_market(FilesSource(d))
        out["lengths"][n] = {"rows": len(frame), "load_s": time.perf_counter() - t, "per_bar": []}
    for key in [bar_key(ts) for ts in get_calendar().session_bars(days[-1])[:bars]]:
        for n in lengths:  # in turn, bar by bar
            t = time.perf_counter()
            markets[n].window(key)
            out["lengths"][n]["per_bar"].append(time.perf_counter() - t)
    for n in lengths:
        v = out["lengths"][n]
        v["p50_ms"] = statistics.median(v.pop("per_bar")) * 1e3
        print(f"files source, {n} sessions × {symbols} symbols ({v['rows']} rows): load {v['load_s']:.2f} s, "
              f"{v['p50_ms']:.1f} ms/bar (p50 of {bars})")
    out["growth"] = out["lengths"][lengths[-1]]["p50_ms"] / out["lengths"][lengths[0]]["p50_ms"]
    return out


def _files_market(source):
    """A market resource answering from an already loaded source (what a run process holds)."""
    from resources.market.resource import MarketDataResource

    class _Held(MarketDataResource):
        def get_source(self):
            return source

    return _Held()


def render(results: dict) -> str:
    s, i, r = results["sensor_path"], results["in_process"], results["replay"]
    lines = ["# tradegraph benchmarks", "", f"Measured {results['when']} on this machine ({os.cpu_count()} cores).", "",
             "| what | measured | target |", "|---|---|---|",
             f"| bar close → orders at the paper broker, sensor path (p50 of {s['bars']} bars) | "
             f"{s['p50_s']:.2f} s | ≤ 10 s |" if s["p50_s"] is not None else "| sensor path | no bar traded | ≤ 10 s |",
             f"| same, long-lived in-process engine (p50 of {i['bars']} bars) | {i['p50_s']:.2f} s | ≤ 1.5 s |",
             f"| pure chain for the same bar (p50) | {i['pure_chain_p50_s'] * 1e3:.0f} ms | |",
             f"| Dagster run / pure chain, same bar | {i['overhead_ratio']:.1f}× | |",
             f"| replay, {r['symbols']} symbols × {r['bars']} bars | {r['ms_per_bar']:.0f} ms/bar | |",
             f"| replay, 1 year × {r['symbols']} symbols (projected from the measured rate) | "
             f"{r['projected_year_s'] / 60:.0f} min | ≤ 60 s |",
             f"| model inference alone, batched {results['floor']['rows']} rows at a time, for 1 year × "
             f"{r['symbols']} symbols (a floor for any replay) | {results['floor']['year_s']:.0f} s | |",
             f"| lineage write cost / bar compute | {r['lineage_share_of_compute'] * 100:.0f}% | ≤ 20% |",
             f"| DuckDB bytes per symbol-bar | {r['bytes_per_symbol_bar']:.0f} B | |", "",
             "Replay ms per bar by stage: " + ", ".join(f"{k} {v:.1f}" for k, v in r["stage_ms_per_bar"].items()), ""]
    if "files" in results:
        f = results["files"]
        lines += ["## Files source (issue 10: per-bar cost must not grow with the files' length)", "",
                  "| sessions × symbols | rows | load | per bar (p50) |", "|---|---|---|---|"]
        lines += [f"| {n} × {f['symbols']} | {v['rows']} | {v['load_s']:.2f} s | {v['p50_ms']:.1f} ms |"
                  for n, v in f["lengths"].items()]
        lines += ["", f"Per-bar cost, longest / shortest files: {f['growth']:.2f}×", ""]
    if results.get("scale"):
        lines += [results["scale"]]
    if "chain" in results:
        lines += ["## Pure chain (features → sized_orders), one bar", "", results["chain"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--sessions", type=int, default=2)
    parser.add_argument("--skip-sensor", action="store_true")
    parser.add_argument("--research-sessions", type=int, default=1,
                        help="sessions of the research benchmarks (issue 12); the year: `make bench-year`")
    parser.add_argument("--skip-scale", action="store_true",
                        help="Skip the scale table (50 / 500 / 5 000 symbols; ≈ 20 min on 2 cores).")
    args = parser.parse_args(argv)
    out_dir = resolve_path("paths.bench")
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="tradegraph-bench-") as tmp:
        work = Path(tmp)
        from TRAINING.testing import train_small_registry

        registry = train_small_registry(work)
        results = {"when": pd.Timestamp.now("UTC").strftime("%Y-%m-%d %H:%M UTC")}
        results["in_process"] = bench_in_process(work, registry)
        print("in-process:", json.dumps(results["in_process"]))
        results["files"] = bench_files_source(work)
        results["replay"] = bench_replay(work, registry, args.symbols, args.sessions)
        results["floor"] = bench_inference_floor(registry, args.symbols)
        print("inference floor:", json.dumps({k: v for k, v in results["floor"].items() if k != "per_model_us"}))
        print("replay:", json.dumps({k: v for k, v in results["replay"].items() if k != "stage_ms_per_bar"}))
        results["sensor_path"] = ({"bars": 0, "latency_s": [], "p50_s": None} if args.skip_sensor
                                  else bench_sensor_path(work, registry))
        print("sensor path:", json.dumps(results["sensor_path"]))
    os.environ.clear()
    os.environ.update(saved)
    reset_config()
    try:
        from dagster_project.commands import bench_chain

        bench_chain.main([])
        chain_md = resolve_path("paths.bench") / "chain.md"
        results["chain"] = chain_md.read_text() if chain_md.exists() else ""
    except ImportError:
        pass
    from dagster_project.commands import bench_research

    research = bench_research.main(["--symbols", str(args.symbols), "--sessions", str(args.research_sessions)])
    results["research"] = research
    # the keys, at the top level: a year key this run did not measure comes from the last year run
    # (`make bench-year`, var/bench/research_year.json; its date under research_keys_from), else null
    results.update(bench_research.keys_with_year(research, out_dir / "research_year.json"))
    if not args.skip_scale:
        from dagster_project.commands import bench_scale

        bench_scale.main([])
        scale_md = resolve_path("paths.bench") / "scale.md"
        results["scale"] = scale_md.read_text() if scale_md.exists() else ""
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    text = render(results)
    (out_dir / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
