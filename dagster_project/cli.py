"""``tradegraph``: audit, explain, replay, kill switch, train — the engine from a terminal.

  tradegraph audit --bar 2025-06-06T19:55Z        rematerialize a past bar and compare (exit 1 on a difference)
  tradegraph explain --bar KEY --symbol S001 [--json]
  tradegraph replay --start 2025-06-02 --end 2025-06-06
  tradegraph kill-switch status | trip --reason R | reset --reason R
  tradegraph train                                   (= python -m TRAINING.train)
Every command takes ``--config FILE`` (a user override file, as TRADEGRAPH_CONFIG) and ``--lineage FILE``
(another lineage DuckDB file, e.g. the demo's ``var/demo/lineage.duckdb``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from CONFIG.config_loader import load_config
from resources.lineage.store import LineageLocked


def _audit(args: argparse.Namespace) -> int:
    from dagster_project.audit import audit_bar

    report = audit_bar(args.bar)
    print(report.render())
    return 0 if report.identical else 1


def _explain(args: argparse.Namespace) -> int:
    from dagster_project.explain import explain, render, to_json

    chain = explain(args.bar, args.symbol)
    print(to_json(chain) if args.json else render(args.bar, args.symbol, chain))
    return 0


def _replay(args: argparse.Namespace) -> int:
    from dagster_project.replay import main as replay_main

    return replay_main(["--start", args.start, "--end", args.end] + (["--no-record"] if args.no_record else []))


def _kill_switch(args: argparse.Namespace, rest: list[str]) -> int:
    from resources.kill_switch.cli import main as ks_main

    return ks_main(rest)


def _train(args: argparse.Namespace, rest: list[str]) -> int:
    from TRAINING.train import main as train_main

    return train_main(rest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tradegraph", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="user configuration file (overrides CONFIG/defaults.yaml)")
    parser.add_argument("--lineage", help="lineage DuckDB file to use (default paths.lineage_db), e.g. the demo's")
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("audit", help="rematerialize a past bar from its recorded inputs and compare")
    a.add_argument("--bar", required=True, help="bar key, e.g. 2025-06-06T19:55Z (UTC bar close)")
    e = sub.add_parser("explain", help="print the whole decision chain of one bar and symbol")
    e.add_argument("--bar", required=True)
    e.add_argument("--symbol", required=True)
    e.add_argument("--json", action="store_true", help="machine-readable output")
    r = sub.add_parser("replay", help="replay sessions through the pure stage functions (paper broker)")
    r.add_argument("--start", required=True)
    r.add_argument("--end", required=True)
    r.add_argument("--no-record", action="store_true")
    sub.add_parser("kill-switch", help="status | trip --reason R | reset --reason R", add_help=False)
    sub.add_parser("train", help="train every model family into the registry", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.lineage:
        os.environ["TRADEGRAPH__PATHS__LINEAGE_DB"] = str(Path(args.lineage).resolve())
    if args.config or args.lineage:
        load_config(args.config)
    if args.command == "kill-switch":
        return _kill_switch(args, rest)
    if args.command == "train":
        return _train(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return {"audit": _audit, "explain": _explain, "replay": _replay}[args.command](args)
    except (LookupError, FileNotFoundError, LineageLocked) as exc:
        print(f"tradegraph {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
