"""What the backend's readers of the Kubernetes API share: the errors a call can end in, and the API's time stamps.

A read that only adds to a step's record or decides early (admission, placement, ownership) must not fail the
step when the API does not answer or refuses: it catches exactly these and says why instead.
"""

from __future__ import annotations

from datetime import datetime

import httpx
import kr8s

API_ERRORS = (kr8s.ServerError, kr8s.APITimeoutError, httpx.HTTPError, OSError)


def api_seconds(value: str | None) -> float:
    """An API timestamp (RFC 3339, whole seconds for most fields) as epoch seconds; 0 when absent."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else 0.0
    except ValueError:
        return 0.0
