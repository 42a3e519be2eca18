"""Where an account's kill switch lives, and the switch on that file: no Dagster import, so the
``tradegraph kill-switch`` commands (an operator halting trading) answer in about a second."""

from __future__ import annotations

from pathlib import Path

from CONFIG.config_loader import resolve_path
from resources.kill_switch.logic import KillSwitch
from resources.kill_switch.memory import HeldKillSwitch
from resources.kill_switch.witness import armed_witness


def state_path_for(account: str, base: str | None = None) -> Path:
    """``paths.kill_switch_state`` for ``live``; ``<stem>.<account><suffix>`` beside it otherwise."""
    path = Path(base) if base else resolve_path("paths.kill_switch_state")
    return path if account == "live" else path.with_name(f"{path.stem}.{account}{path.suffix}")


def switch_for(account: str, base: str | None = None, held: bool = False) -> KillSwitch:
    """The file-backed switch of ``account`` with its second witness (lineage file and broker account);
    ``held``: its state held in memory between operations, written by ``save()`` (the replay's,
    :class:`resources.kill_switch.memory.HeldKillSwitch`)."""
    kind = HeldKillSwitch if held else KillSwitch
    return kind(state_path_for(account, base), witness=armed_witness(account))
