"""Training and the model registry.

OpenMP's idle workers wait passively (unless the environment says otherwise), set here because every import
of torch and LightGBM goes through this package and the runtime reads the variable once, when it loads. Why:
inference runs on ``training.threads`` (2) threads for determinism; on a busy 2-core machine (a Dagster daemon,
the webserver, a run) workers that spin while waiting made the GRU's inference for 4 000 windows take
1–2 s instead of 0.03 s (measured 2026-11-29, load ≈ 7). The wait policy changes no result, only the waiting.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
