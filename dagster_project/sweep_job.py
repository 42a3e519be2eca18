"""The sweep as a Dagster job: one dynamic partition of ``sweep_result`` per configuration hash.

``sweep_configs`` fans out one step per configuration of the plan (a ``DynamicOut`` mapped by the hash),
each step replays its configuration and materializes its partition of ``sweep_result`` (the hash is the
partition key, added to the ``sweep_config`` dynamic partitions before the run), and ``gather_sweep`` reads
every result into one table. The job runs on the multiprocess executor, so the steps spread over the cores
here (``max_concurrent``); with the k8s or Celery executor (or a run launcher) they spread over machines with
no change to this code. Each step writes only its own result file, so steps share nothing but the read-only
registry and the prediction cache (new shards are whole files under new names).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

SWEEP_PARTITIONS = dg.DynamicPartitionsDefinition(name="sweep_config")
sweep_result = dg.AssetSpec("sweep_result", partitions_def=SWEEP_PARTITIONS, group_name="research",
                            description="One replayed sweep configuration's figures (Sharpe, return, drawdown, "
                                        "turnover, costs, hit rate); the partition key is its config hash.")


@dg.op(out=dg.DynamicOut(str), config_schema={"sweep_dir": str})
def sweep_configs(context):
    from dagster_project.commands.sweep_grid import read_plan

    for key in sorted(read_plan(Path(context.op_config["sweep_dir"]))["configs"]):
        yield dg.DynamicOutput(key, mapping_key=key[:32])


@dg.op(config_schema={"sweep_dir": str})
def replay_configuration(context, key: str) -> str:
    import torch

    from dagster_project.commands.sweep_grid import run_configuration

    torch.set_num_threads(1)   # one core per step: the executor's max_concurrent decides the parallelism
    row = run_configuration(Path(context.op_config["sweep_dir"]), key)
    context.log_event(dg.AssetMaterialization(
        asset_key="sweep_result", partition=key,
        metadata={k: dg.MetadataValue.float(float(v)) for k, v in row.items()
                  if isinstance(v, int | float) and not isinstance(v, bool) and v == v}))
    return key


@dg.op(config_schema={"sweep_dir": str})
def gather_sweep(context, keys: list[str]) -> str:
    from dagster_project.commands.sweep_grid import gather

    table = gather(Path(context.op_config["sweep_dir"]))
    for warning in table.attrs["warnings"]:
        context.log.warning(warning)
    context.log.info(f"{len(table)} configurations gathered; best {table['config_hash'].iloc[0]}")
    return str(Path(context.op_config["sweep_dir"]) / "results.csv")


@dg.job(executor_def=dg.multiprocess_executor, tags={"tradegraph/kind": "sweep"})
def sweep_job():
    gather_sweep(sweep_configs().map(replay_configuration).collect())


def sweep_run_config(sweep_dir: Path, max_concurrent: int) -> dict:
    ops = {name: {"config": {"sweep_dir": str(sweep_dir)}}
           for name in ("sweep_configs", "replay_configuration", "gather_sweep")}
    return {"ops": ops, "execution": {"config": {"max_concurrent": max_concurrent}}}


def get_sweep_job() -> dg.JobDefinition:
    return sweep_job
