"""The model registry on disk: immutable, checksummed, versioned models with an ACTIVE pointer.

Layout (root ``paths.registry``)::

    <root>/<target>/<family>/<version>/model.txt | model.pt   (the model file, read-only)
    <root>/<target>/<family>/<version>/model_meta.json        (write_atomic_json, canonical)
    <root>/<target>/<family>/ACTIVE                           ({"version": …}, write_atomic_json)

Targets: ``ret_<h>m`` for the return families (``lightgbm``, ``sequential``), ``peak_<h>m`` / ``valley_<h>m``
for ``barrier_lightgbm``. Versions (decision): ``v0001``, ``v0002``, … in publishing order, so a listing
reads as history and "latest" is obvious; a version directory is assembled in a staging directory and
renamed into place, so it is complete or absent, and never rewritten. Publishing content identical to an
existing version (same model sha256 and the same metadata apart from ``created_at``) returns that version.

Loading fails closed: any problem — no ACTIVE pointer, a missing or corrupt file, a checksum mismatch, a
metadata field missing, a feature list or bar interval that differs from the current configuration — is a
:class:`RegistryError` naming the file and the problem, which the prediction stage records as a skip.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import re
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from assets.features.logic import FeatureParams
from CONFIG.config_loader import effective_config_hash, get_cfg, resolve_path
from TRAINING.common.utils.code_version import code_version
from TRAINING.common.utils.determinism_ordering import sorted_items
from TRAINING.common.utils.file_utils import canonical_json, read_json, write_atomic_json

META_FILE = "model_meta.json"
ACTIVE_FILE = "ACTIVE"
FAMILIES: dict[str, tuple[str, str]] = {  # family → (kind, model file)
    "lightgbm": ("tabular", "model.txt"),
    "sequential": ("sequential", "model.pt"),
    "barrier_lightgbm": ("tabular", "model.txt"),
}
TARGET_PREFIXES: dict[str, tuple[str, ...]] = {"ret": ("lightgbm", "sequential"), "peak": ("barrier_lightgbm",),
                                               "valley": ("barrier_lightgbm",)}
REQUIRED_META = ("target", "family", "kind", "horizon_minutes", "bar_minutes", "features", "feature_set_version",
                 "T", "training_window", "validation_ic", "calibration_slope", "model_file", "model_sha256",
                 "code_version", "config_hash")
_TARGET_RE = re.compile(r"^(ret|peak|valley)_(\d+)m$")
_VERSION_RE = re.compile(r"^v(\d{4,})$")


class RegistryError(ValueError):
    """A model that cannot be published or used; the message names the file and the problem."""


def return_target(horizon_minutes: int) -> str:
    return f"ret_{int(horizon_minutes)}m"


def barrier_target(side: str, horizon_minutes: int) -> str:
    if side not in ("peak", "valley"):
        raise ValueError(f"barrier side must be 'peak' or 'valley', got {side!r}")
    return f"{side}_{int(horizon_minutes)}m"


def _root(root: str | os.PathLike | None) -> Path:
    return Path(root) if root is not None else resolve_path("paths.registry")


def _family_dir(target: str, family: str, root: str | os.PathLike | None) -> Path:
    m = _TARGET_RE.match(target)
    if not m:
        raise RegistryError(f"target {target!r} is not of the form ret_<h>m, peak_<h>m or valley_<h>m")
    if family not in FAMILIES:
        raise RegistryError(f"family {family!r} is not one of {sorted(FAMILIES)}")
    if family not in TARGET_PREFIXES[m.group(1)]:
        raise RegistryError(f"family {family!r} does not serve target {target!r}")
    return _root(root) / target / family


def meta_number(meta: Mapping[str, Any], key: str) -> float:
    """A metric of ``model_meta.json`` as a float: NaN when it is ``null`` (not measured: e.g. fewer than
    ``training.ic_min_symbols`` names had a label), absent or not a finite number. Every reader of a metric
    goes through here, so an undefined metric is a NaN the stages handle, never a ``TypeError``."""
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return float("nan")
    return float(value) if np.isfinite(value) else float("nan")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------- listing
def list_versions(target: str, family: str, *, root: str | os.PathLike | None = None) -> list[str]:
    """Published versions, oldest first."""
    d = _family_dir(target, family, root)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p.name) for p in d.iterdir() if p.is_dir() and (m := _VERSION_RE.match(p.name))]
    return [name for _, name in sorted(found)]


def list_models(*, root: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """(target, family) pairs with at least one published version, sorted."""
    base = _root(root)
    if not base.is_dir():
        return []
    out = []
    for tdir in sorted(p for p in base.iterdir() if p.is_dir() and _TARGET_RE.match(p.name)):
        prefix = _TARGET_RE.match(tdir.name).group(1)
        for family in TARGET_PREFIXES[prefix]:
            if list_versions(tdir.name, family, root=base):
                out.append((tdir.name, family))
    return out


def active_version(target: str, family: str, *, root: str | os.PathLike | None = None) -> str | None:
    """The version the ACTIVE pointer names, or None when there is no pointer."""
    path = _family_dir(target, family, root) / ACTIVE_FILE
    if not path.exists():
        return None
    try:
        version = read_json(path).get("version")
    except (OSError, ValueError, AttributeError) as exc:
        raise RegistryError(f"{path}: unreadable ACTIVE pointer: {exc}") from exc
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise RegistryError(f"{path}: ACTIVE pointer names no valid version ({version!r})")
    return version


def registry_is_empty(*, root: str | os.PathLike | None = None) -> bool:
    """True when no target/family has an active version (nothing a prediction could load)."""
    for target, family in list_models(root=root):
        try:
            if active_version(target, family, root=root):
                return False
        except RegistryError:
            continue
    return True


def set_active(target: str, family: str, version: str, *, root: str | os.PathLike | None = None) -> None:
    """Point ACTIVE at ``version`` after verifying it (a corrupt version is never activated)."""
    verify(target, family, version, root=root)
    write_atomic_json(_family_dir(target, family, root) / ACTIVE_FILE, {"version": version})


# ----------------------------------------------------------------------------------------------- checks
def _check_features(meta: Mapping[str, Any], where: Path) -> None:
    p = FeatureParams.from_cfg()
    if list(meta["features"]) != list(p.names) or meta["feature_set_version"] != p.version:
        raise RegistryError(
            f"{where}: feature list does not match the current feature set: model has "
            f"{meta['feature_set_version']} {list(meta['features'])}, configuration has {p.version} {p.names}")
    bar = int(get_cfg("market.bar_minutes"))
    if int(meta["bar_minutes"]) != bar:
        raise RegistryError(f"{where}: model trained on {meta['bar_minutes']}m bars, configuration has {bar}m")


def _check_publishable(target: str, family: str, model_bytes: bytes, meta: Mapping[str, Any]) -> None:
    m = _TARGET_RE.match(target)
    where = Path(target) / family
    if not model_bytes:
        raise RegistryError(f"{where}: empty model file")
    bar = int(meta.get("bar_minutes") or get_cfg("market.bar_minutes"))
    horizon = int(meta.get("horizon_minutes", -1))
    if horizon <= 0 or horizon % bar:
        raise RegistryError(f"{where}: horizon {horizon}m is not a positive multiple of the bar interval {bar}m")
    if int(m.group(2)) != horizon:
        raise RegistryError(f"{where}: target {target} does not match horizon_minutes={horizon}")
    window = meta.get("training_window") or {}
    if not window.get("first_session") or not window.get("last_session"):
        raise RegistryError(f"{where}: empty training window (no first/last session)")
    if int(window.get("train_rows") or 0) <= 0:
        raise RegistryError(f"{where}: training window has no row with a finite target and features "
                            f"(empty or all-NaN window {window.get('first_session')}…{window.get('last_session')})")
    if family == "sequential" and not isinstance(meta.get("architecture"), Mapping):
        raise RegistryError(f"{where}: a sequential model needs its architecture in the metadata")
    for key in ("validation_ic", "calibration_slope"):
        value = meta.get(key)
        if value is not None and not (isinstance(value, int | float) and np.isfinite(value)):
            raise RegistryError(f"{where}: {key}={value!r} must be a finite number or null (not measured)")


def _complete_meta(target: str, family: str, model_bytes: bytes, meta: Mapping[str, Any]) -> dict[str, Any]:
    kind, model_file = FAMILIES[family]
    out = dict(meta)
    out.update(target=target, family=family, kind=kind, model_file=model_file,
               model_sha256=sha256_bytes(model_bytes), code_version=code_version(),
               config_hash=effective_config_hash())
    out.setdefault("bar_minutes", int(get_cfg("market.bar_minutes")))
    out.setdefault("T", 1)
    out.setdefault("created_at", dt.datetime.now(dt.UTC))
    missing = [k for k in REQUIRED_META if k not in out]
    if missing:
        raise RegistryError(f"{Path(target) / family}: metadata missing field(s) {missing}")
    return out


def _same_content(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal as stored (canonical JSON), ignoring when each was published."""
    def strip(m: Mapping[str, Any]) -> dict:
        return {k: v for k, v in sorted_items(m) if k != "created_at"}
    return canonical_json(strip(a)) == canonical_json(strip(b))


# ----------------------------------------------------------------------------------------------- publish
def publish(target: str, family: str, model_bytes: bytes, meta: Mapping[str, Any], *, activate: bool = True,
            root: str | os.PathLike | None = None) -> str:
    """Write a new immutable version (or return the identical existing one); optionally activate it."""
    fam_dir = _family_dir(target, family, root)
    _check_publishable(target, family, model_bytes, meta)
    full = _complete_meta(target, family, model_bytes, meta)
    _check_features(full, fam_dir)
    for version in reversed(list_versions(target, family, root=root)):
        try:
            existing = read_json(fam_dir / version / META_FILE)
        except (OSError, ValueError):
            continue
        if _same_content(existing, full):
            if activate:
                set_active(target, family, version, root=root)
            return version
    fam_dir.mkdir(parents=True, exist_ok=True)
    staging = fam_dir / f".staging-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        _write_version(staging, full["model_file"], model_bytes, full)
        version = _rename_into_place(staging, fam_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if activate:
        set_active(target, family, version, root=root)
    return version


def _write_version(d: Path, model_file: str, model_bytes: bytes, meta: Mapping[str, Any]) -> None:
    path = d / model_file
    with open(path, "wb") as fh:
        fh.write(model_bytes)
        fh.flush()
        os.fsync(fh.fileno())
    write_atomic_json(d / META_FILE, meta)
    for f in (path, d / META_FILE):
        f.chmod(0o444)  # immutable by intent: a later write needs a deliberate chmod


def _rename_into_place(staging: Path, fam_dir: Path) -> str:
    """Rename the complete staging directory to the next free version; retries if another writer won."""
    for _ in range(100):
        names = [p.name for p in fam_dir.iterdir() if _VERSION_RE.match(p.name)]
        nxt = 1 + max((int(_VERSION_RE.match(n).group(1)) for n in names), default=0)
        target = fam_dir / f"v{nxt:04d}"
        if target.exists():
            continue
        try:
            os.rename(staging, target)
        except OSError:
            continue
        fd = os.open(fam_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return target.name
    raise RegistryError(f"{fam_dir}: could not allocate a new version (too many concurrent publishers)")


# ----------------------------------------------------------------------------------------------- load
def _resolve(target: str, family: str, version: str | None, root: str | os.PathLike | None) -> Path:
    fam_dir = _family_dir(target, family, root)
    if version is None:
        version = active_version(target, family, root=root)
        if version is None:
            raise RegistryError(f"{fam_dir / ACTIVE_FILE}: no active version of {target}/{family}")
    if not _VERSION_RE.match(version):
        raise RegistryError(f"{fam_dir}: {version!r} is not a version name (v0001, v0002, …)")
    d = fam_dir / version
    if not d.is_dir():
        raise RegistryError(f"{d}: version {version} of {target}/{family} does not exist")
    return d


def _verified(target: str, family: str, version: str | None,
              root: str | os.PathLike | None) -> tuple[Path, dict[str, Any], bytes]:
    d = _resolve(target, family, version, root)
    meta_path = d / META_FILE
    try:
        meta = read_json(meta_path)
    except FileNotFoundError as exc:
        raise RegistryError(f"{meta_path}: metadata file missing") from exc
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{meta_path}: unreadable metadata: {exc}") from exc
    if not isinstance(meta, dict):
        raise RegistryError(f"{meta_path}: metadata is not a JSON object")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise RegistryError(f"{meta_path}: metadata missing field(s) {missing}")
    if meta["target"] != target or meta["family"] != family:
        raise RegistryError(f"{meta_path}: metadata is for {meta['target']}/{meta['family']}, "
                            f"found under {target}/{family}")
    if family == "sequential" and not isinstance(meta.get("architecture"), dict):
        raise RegistryError(f"{meta_path}: metadata missing field(s) ['architecture']")
    _check_features(meta, meta_path)
    model_path = d / str(meta["model_file"])
    try:
        blob = model_path.read_bytes()
    except OSError as exc:
        raise RegistryError(f"{model_path}: unreadable model file: {exc}") from exc
    digest = sha256_bytes(blob)
    if digest != meta["model_sha256"]:
        raise RegistryError(f"{model_path}: checksum mismatch (metadata sha256 {meta['model_sha256']}, "
                            f"file sha256 {digest})")
    return d, meta, blob


def verify(target: str, family: str, version: str | None = None, *,
           root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Check a version (default: the active one) without building it; returns its metadata."""
    return _verified(target, family, version, root)[1]


@dataclass
class LoadedModel:
    """A verified model ready to predict; ``meta`` is its ``model_meta.json``."""

    target: str
    family: str
    version: str
    path: Path
    meta: dict[str, Any]
    _model: Any

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def T(self) -> int:
        return int(self.meta["T"])

    def predict(self, X: np.ndarray) -> np.ndarray:
        """tabular (N, F) → (N,); sequential (N, T, F) → (N,); barrier: P(label = 1). NaN for a row with
        a non-finite input (the same rule as in training: such rows were never fitted)."""
        x = np.asarray(X, dtype=float)
        nf = len(self.meta["features"])
        if self.kind == "sequential":
            if x.ndim != 3 or x.shape[1:] != (self.T, nf):
                raise ValueError(f"{self.target}/{self.family} {self.version}: expects (N, {self.T}, {nf}), "
                                 f"got {x.shape}")
            from TRAINING.trainers.sequential import predict_windows
            return predict_windows(self._model, x)
        if x.ndim != 2 or x.shape[1] != nf:
            raise ValueError(f"{self.target}/{self.family} {self.version}: expects (N, {nf}), got {x.shape}")
        out = np.full(len(x), np.nan)
        ok = np.isfinite(x).all(axis=1)
        if ok.any():
            out[ok] = self._model.predict(x[ok])
        return out


def load(target: str, family: str, version: str | None = None, *,
         root: str | os.PathLike | None = None) -> LoadedModel:
    """Verify and build a model (default: the active version)."""
    d, meta, blob = _verified(target, family, version, root)
    model_path = d / meta["model_file"]
    try:
        model = _build(family, meta, blob)
    except Exception as exc:  # any parse failure of the file is an unreadable model
        raise RegistryError(f"{model_path}: unreadable model file: {type(exc).__name__}: {exc}") from exc
    return LoadedModel(target, family, d.name, d, meta, model)


def _build(family: str, meta: Mapping[str, Any], blob: bytes) -> Any:
    if FAMILIES[family][0] == "tabular":
        import lightgbm as lgb
        booster = lgb.Booster(model_str=blob.decode())
        if booster.num_feature() != len(meta["features"]):
            raise ValueError(f"model has {booster.num_feature()} features, metadata lists {len(meta['features'])}")
        return booster
    import torch

    from TRAINING.trainers.sequential import build_model
    model = build_model(meta["architecture"])
    model.load_state_dict(torch.load(io.BytesIO(blob), weights_only=True), strict=True)
    model.eval()
    return model
