"""Which models a bar uses: the active versions (live, replay) or the recorded ones (audit).

A family or horizon whose model is missing, unreadable, fails its checksum or does not match the current
feature list is skipped for the bar, with the reason kept in ``status`` (it lands in lineage and in the
asset metadata); the rest of the chain runs on what is left.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import pandas as pd

from CONFIG.config_loader import get_cfg, resolve_path
from TRAINING.common.utils.determinism_ordering import sorted_items
from TRAINING.registry import LoadedModel, RegistryError, active_version, barrier_target, load, return_target

RETURN_FAMILIES = ("lightgbm", "sequential")
BARRIER_FAMILY = "barrier_lightgbm"


@dataclass
class ModelSet:
    """The loaded models of one bar, keyed by (target, family), and one status row per wanted model."""

    models: dict[tuple[str, str], LoadedModel] = field(default_factory=dict)
    status: pd.DataFrame = field(default_factory=pd.DataFrame)

    def get(self, target: str, family: str) -> LoadedModel | None:
        return self.models.get((target, family))

    def versions(self) -> dict[str, str]:
        return {f"{t}/{f}": m.version for (t, f), m in sorted_items(self.models)}


@lru_cache(maxsize=64)
def _load_cached(root: str, target: str, family: str, version: str) -> LoadedModel:
    """Versions are immutable, so a process loads (and checksums) each one once."""
    return load(target, family, version, root=root)


def wanted() -> list[tuple[str, str]]:
    """Every (target, family) the configuration asks for, in a fixed order."""
    fams = [f for f in get_cfg("training.families") if f in RETURN_FAMILIES]
    out = [(return_target(h), f) for h in sorted(get_cfg("horizons.minutes")) for f in sorted(fams)]
    hb = get_cfg("barrier.horizon_minutes")
    return out + [(barrier_target("peak", hb), BARRIER_FAMILY), (barrier_target("valley", hb), BARRIER_FAMILY)]


def load_models(versions: Mapping[str, str] | None = None) -> ModelSet:
    """Load every wanted model; ``versions`` ("target/family" → version) pins the recorded ones (audit)."""
    out = ModelSet()
    rows = []
    for target, family in wanted():
        key = f"{target}/{family}"
        pinned = (versions or {}).get(key)
        if versions is not None and pinned is None:
            rows.append((target, family, None, "skipped", "not used when this bar was recorded"))
            continue
        try:
            version = pinned or active_version(target, family)
            if version is None:
                rows.append((target, family, None, "skipped", "missing: no active version in the registry"))
                continue
            out.models[(target, family)] = _load_cached(str(resolve_path("paths.registry")), target, family,
                                                        version)
            rows.append((target, family, version, "ok", ""))
        except (RegistryError, FileNotFoundError, OSError, ValueError) as exc:
            rows.append((target, family, pinned, "skipped", str(exc)))
    out.status = pd.DataFrame(rows, columns=["target", "family", "version", "status", "reason"])
    return out
