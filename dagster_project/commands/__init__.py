"""The user commands: CLI, demo, replay, audit, explain, reports, benchmarks, UI launcher (not Dagster wiring)."""
