"""Who may place an order in live mode: the bar sensor (or our own in-process engine) proves its launches.

Threat model (README "Who may place an order"): Dagster's open-source webserver and GraphQL API have no
login, and anyone who reaches them can launch a run with any tags. A tag alone therefore proves nothing. The
launcher that may trade live — the bar sensor, which runs inside the code location, or an engine process the
operator started (``make demo``, ``tradegraph bench``) — signs each launch:

    tags ``tradegraph/launch_nonce`` = a fresh random nonce,
         ``tradegraph/launch_proof`` = HMAC-SHA256(secret, "<bar>|<nonce>")   (RFC 2104)

under a secret the webserver never shows: ``$TRADEGRAPH_LAUNCH_SECRET`` in the code location's environment,
else the file ``paths.launch_secret`` (created 0600 on first use, 32 random bytes; a file readable by group
or others is refused). A person at the UI sees a sensor run's tags but cannot make a proof for another bar
or nonce. UI re-execution copies a run's tags, proof included, so a proof is **redeemed once**: the first
run that presents it records (nonce, bar, run id) in lineage (``runs_launch_proofs``) and any other run presenting
the same nonce is refused (:func:`redeem`). What it does not protect against: anyone who can read the
secret (the code location's user, its environment, the ``var/`` directory) or change the code.

Pure logic (no Dagster): signing, checking, the secret file. Redemption is a lineage write.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

import duckdb

from CONFIG.config_loader import get_cfg, resolve_path

SECRET_ENV = "TRADEGRAPH_LAUNCH_SECRET"
NONCE_TAG = "tradegraph/launch_nonce"
PROOF_TAG = "tradegraph/launch_proof"
OUTCOME_TAG = "tradegraph/outcome"
OUTCOMES = ("traded", "nothing_to_trade", "refused", "halted", "error")
PROOFS_TABLE = "runs_launch_proofs"


class LaunchSecretError(RuntimeError):
    """The launch secret file is unusable (readable by others, empty); names the file, never its content."""


def _secret_file() -> Path:
    return resolve_path("paths.launch_secret")


def launch_secret() -> bytes:
    """The signing key: ``$TRADEGRAPH_LAUNCH_SECRET`` when set, else the 0600 file ``paths.launch_secret``
    (created with 32 random bytes on first use; an exclusive create, so two processes never disagree)."""
    env = os.environ.get(SECRET_ENV, "")
    if env:
        return env.encode()
    path = _secret_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
            fh.flush()
            os.fsync(fh.fileno())
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise LaunchSecretError(f"{path} is readable by group or others (mode {mode:o}); chmod 600 it")
    key = path.read_text().strip()
    if not key:
        raise LaunchSecretError(f"{path} is empty; delete it (a new secret is made) or set ${SECRET_ENV}")
    return key.encode()


def _digest(bar: str, nonce: str) -> str:
    return hmac.new(launch_secret(), f"{bar}|{nonce}".encode(), hashlib.sha256).hexdigest()


def signed_tags(bar: str, nonce: str | None = None) -> dict[str, str]:
    """The tags that let a launch of ``bar`` reach the live broker (the sensor's and the engine's)."""
    nonce = nonce or secrets.token_hex(16)
    return {NONCE_TAG: nonce, PROOF_TAG: _digest(bar, nonce)}


def proof_problem(tags: Mapping[str, str], bar: str) -> str | None:
    """Why these run tags do not prove a signed launch of ``bar`` (None when they do)."""
    nonce, proof = tags.get(NONCE_TAG, ""), tags.get(PROOF_TAG, "")
    if not nonce or not proof:
        return "launched by hand (no launch proof: only the bar sensor or the engine may trade live)"
    if not hmac.compare_digest(proof, _digest(bar, nonce)):
        return f"launch proof does not match bar {bar} (forged, or copied from another bar's run)"
    return None


def manual_live_allowed() -> bool:
    """``engine.allow_manual_live_runs``: read from the deployment's configuration, never from a launch."""
    return bool(get_cfg("engine.allow_manual_live_runs"))


def redeem(con: duckdb.DuckDBPyConnection, nonce: str, bar: str, run_id: str, at: object) -> str | None:
    """Record that ``run_id`` used the proof ``nonce``; the run id that used it first when that is another
    run (a copied launch: UI re-execution copies the tags), else None."""
    con.execute(f"CREATE TABLE IF NOT EXISTS {PROOFS_TABLE} (nonce VARCHAR, bar VARCHAR, run_id VARCHAR, "
                "redeemed_at TIMESTAMPTZ)")
    first = con.execute(f"SELECT run_id FROM {PROOFS_TABLE} WHERE nonce = ? ORDER BY redeemed_at LIMIT 1", [nonce]).fetchall()
    if first:
        return None if first[0][0] == run_id else str(first[0][0])
    con.execute(f"INSERT INTO {PROOFS_TABLE} VALUES (?, ?, ?, ?)", [nonce, bar, run_id, at])
    return None
