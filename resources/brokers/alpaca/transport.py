"""The HTTP transport under alpaca-py's clients: timeouts, Alpaca's rate limit, bounded retries.

Why our own transport: alpaca-py's ``RESTClient`` sends requests with no timeout (a hung socket would hang
the bar) and retries a 429 or 504 by sleeping a fixed 3 s up to 3 times, whatever the rate-limit headers
say. So every client we build gets a ``requests`` adapter mounted on its session that

* gives each request ``timeout_seconds`` (a timeout surfaces as :class:`BrokerTimeout`);
* answers a 429 by waiting until the window resets — ``Retry-After`` seconds, else ``X-RateLimit-Reset``
  (unix seconds) minus now, as Alpaca documents ("Rate Limits": do not retry before the reset) — at most
  ``broker.alpaca.rate_limit_retries`` times, and never a wait longer than
  ``broker.alpaca.rate_limit_max_wait_seconds`` (then the 429 is returned and becomes an error);
* retries a read (GET) answered 5xx up to ``broker.alpaca.server_error_retries`` times with doubling
  back-off. A POST is never retried here: whether an order reached the venue is decided by looking its
  ``client_order_id`` up (``resources.brokers.submit``), not by sending it again;

and the client's own retry loop is switched off (``_retry = 0``: alpaca-py has no public knob for it; a
test pins the behaviour, so a library change that breaks it fails loudly). A 429 is safe to resend: the
venue did not process the request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from CONFIG.config_loader import get_cfg
from resources.brokers.protocol import BrokerError, BrokerTimeout
from resources.credentials import redact


@dataclass(frozen=True)
class RetryPolicy:
    """How one client talks to Alpaca (seconds and counts)."""

    timeout_seconds: float
    rate_limit_retries: int
    rate_limit_max_wait_seconds: float
    server_error_retries: int
    retry_backoff_seconds: float

    @classmethod
    def from_config(cls, timeout_seconds: float) -> RetryPolicy:
        k = "broker.alpaca."
        return cls(float(timeout_seconds), get_cfg(k + "rate_limit_retries"),
                   get_cfg(k + "rate_limit_max_wait_seconds"), get_cfg(k + "server_error_retries"),
                   get_cfg(k + "retry_backoff_seconds"))


def rate_limit_wait(headers: Mapping[str, str], now: float, fallback: float) -> float:
    """Seconds to wait after a 429: ``Retry-After`` (seconds or an HTTP date), else ``X-RateLimit-Reset``
    (unix seconds) − ``now``, else ``fallback``; never negative. Header names are case-insensitive."""
    h = {str(k).lower(): str(v).strip() for k, v in headers.items()}
    if "retry-after" in h:
        value = h["retry-after"]
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - now)
            except (TypeError, ValueError):
                pass
    if "x-ratelimit-reset" in h:
        try:
            return max(0.0, float(h["x-ratelimit-reset"]) - now)
        except ValueError:
            pass
    return max(0.0, fallback)


class VenueAdapter(HTTPAdapter):
    """A ``requests`` adapter with the policy above. ``sleep``/``clock`` are injectable (tests)."""

    def __init__(self, policy: RetryPolicy, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.policy, self.sleep, self.clock = policy, sleep, clock

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.policy.timeout_seconds
        limited = failed = 0
        while True:
            response = super().send(request, **kwargs)
            if response.status_code == 429 and limited < self.policy.rate_limit_retries:
                wait = rate_limit_wait(response.headers, self.clock(),
                                       self.policy.retry_backoff_seconds * 2 ** limited)
                if wait > self.policy.rate_limit_max_wait_seconds:
                    return response  # the window is further away than we may wait: an error, said so
                limited += 1
                response.close()
                self.sleep(wait)
                continue
            if response.status_code >= 500 and request.method == "GET" \
                    and failed < self.policy.server_error_retries:
                self.sleep(self.policy.retry_backoff_seconds * 2 ** failed)
                failed += 1
                response.close()
                continue
            return response


def harden(client: Any, policy: RetryPolicy, sleep: Callable[[float], None] = time.sleep,
           clock: Callable[[], float] = time.time) -> Any:
    """Mount :class:`VenueAdapter` on an alpaca-py client's session and switch its own retries off."""
    adapter = VenueAdapter(policy, sleep, clock)
    client._session.mount("https://", adapter)
    client._session.mount("http://", adapter)
    client._retry = 0
    return client


class VenueError(BrokerError):
    """The venue answered with an HTTP error. ``status`` and ``message`` (redacted) let callers tell a
    rejection (nothing was placed) from a failure (fate unknown)."""

    def __init__(self, status: int | None, message: str, code: int | None = None) -> None:
        super().__init__(f"Alpaca HTTP {status}: {message}" if status else message)
        self.status, self.message, self.code = status, message, code


def _api_error_parts(exc: Any) -> tuple[int | None, str, int | None]:
    status = getattr(exc, "status_code", None)
    text = str(exc)
    try:
        message, code = exc.message, exc.code
    except Exception:  # the body was not Alpaca's JSON error shape
        message, code = text, None
    return status, str(message), code if isinstance(code, int) else None


def call(fn: Callable[..., Any], *args: Any, secrets: Iterable[str], what: str, **kwargs: Any) -> Any:
    """Run one client call; translate every failure into a redacted :class:`BrokerError` raised ``from
    None`` (so no unredacted cause travels with it into logs or Dagster's error record)."""
    from alpaca.common.exceptions import APIError  # the [brokers] extra; imported only when used

    secrets = tuple(secrets)
    try:
        return fn(*args, **kwargs)
    except APIError as exc:
        status, message, code = _api_error_parts(exc)
        err = VenueError(status, redact(message, secrets), code)
    except requests.Timeout as exc:
        err = BrokerTimeout(f"Alpaca {what}: no answer in time ({type(exc).__name__}: {redact(exc, secrets)})")
    except requests.RequestException as exc:
        err = BrokerError(f"Alpaca {what}: {type(exc).__name__}: {redact(exc, secrets)}")
    raise err from None
