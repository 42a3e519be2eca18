"""A zygote for kill -9 trials: imports the engine once, then forks one child per bar run.

Why a fork server: every trial needs a fresh process to kill (a SIGKILL leaves no hook, no ``finally``),
and a fresh Python importing Dagster, torch and LightGBM costs seconds. This process imports them once
(no model is evaluated, no OpenMP or torch thread pool is started, no DuckDB file is open) and forks a child
per command; the child runs the bar through the real trading job in its own process and, when asked,
SIGKILLs itself at the k-th *event*: the entry or the return of a call that writes somewhere (a lineage
write, a paper-broker transaction, the kill-switch state, a runs row). The parent reaps the child and
answers on stdout.

Protocol (JSON lines): ``{"bar": KEY, "run_id": ID, "kill_at": k or 0, "report": FILE, "log": FILE}`` →
``{"exit": code, "signal": n, "events": total events seen (0 when killed)}``.
"""

from __future__ import annotations

import json
import os
import signal
import sys


def _instrument(kill_at: int) -> list[int]:
    from dagster_project.commands import replay  # noqa: F401  (the same modules the engine loads)
    from resources.brokers.paper import PaperBroker
    from resources.kill_switch.logic import KillSwitch
    from resources.lineage.io_manager import LineageIOManager
    from resources.lineage.store import LineageStore

    count = [0]

    def event() -> None:
        count[0] += 1
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def wrap(owner: type, name: str) -> None:
        original = getattr(owner, name)

        def wrapped(*args, **kwargs):
            event()
            out = original(*args, **kwargs)
            event()
            return out

        setattr(owner, name, wrapped)

    for owner, name in ((LineageStore, "replace_bars"), (LineageStore, "append_bars"),
                        (LineageStore, "upsert_run"), (LineageIOManager, "handle_output"),
                        (PaperBroker, "_submit_one"), (PaperBroker, "settle"), (PaperBroker, "cancel"),
                        (KillSwitch, "_transact")):
        wrap(owner, name)
    return count


def _child(command: dict, instance) -> int:
    log = os.open(command["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 1)
    os.dup2(log, 2)
    count = _instrument(int(command.get("kill_at") or 0))
    import time

    from dagster_project.definitions import defs
    from resources.launch_proof import OUTCOME_TAG, signed_tags
    from resources.lineage.io_manager import MODE_TAG

    t = time.perf_counter()
    result = defs.resolve_job_def("trading_job").execute_in_process(
        partition_key=command["bar"], run_id=command["run_id"], instance=instance, raise_on_error=False,
        tags={MODE_TAG: "live", **signed_tags(command["bar"])})  # the engine signs its live launches
    outcome = instance.get_run_by_id(result.run_id).tags.get(OUTCOME_TAG)
    with open(command["report"], "w") as fh:
        json.dump({"events": count[0], "success": result.success, "outcome": outcome,
                   "seconds": time.perf_counter() - t}, fh)
    return 0 if result.success else 2 if outcome == "refused" else 1  # a refused run fails, by design


def main() -> None:
    import torch

    torch.set_num_threads(1)
    with torch.no_grad():  # the first recurrent call sets its kernels up (~0.6 s): once, single-threaded
        torch.nn.GRU(4, 4, batch_first=True)(torch.zeros(2, 3, 4))
    import dagster as dg
    import lightgbm  # noqa: F401

    from dagster_project.definitions import defs
    from resources.model_registry import ModelRegistryResource

    # what every run loads and never changes, once: the job, the models, an (in-memory) Dagster instance
    # — each child works on its own copy of it
    defs.resolve_job_def("trading_job")
    ModelRegistryResource().load()
    instance = dg.DagsterInstance.ephemeral()
    import upath

    upath.UPath("/")  # Dagster's first step log resolves a path type lazily (entry points: ~0.3 s)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(command, instance)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        report = {"events": 0}
        if os.WIFEXITED(status) and os.path.exists(command["report"]):
            with open(command["report"]) as fh:
                report = json.load(fh)
            os.unlink(command["report"])
        print(json.dumps({"exit": os.waitstatus_to_exitcode(status),
                          "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0, **report}), flush=True)


if __name__ == "__main__":
    main()
