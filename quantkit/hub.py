"""How quantkit talks to the Hugging Face Hub: huggingface_hub reads its environment once, at import; quantkit
reads it at each call, so that HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE set later (by a user's shell
wrapper, or a test server) still count, for every download alike.

Offline is also found out, not only declared: huggingface_hub retries a refused connection for about 23 s before
it falls back to the cache; one quick look at the endpoint first lets quantkit go to the cache at once."""
from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request

log = logging.getLogger(__name__)
_PROBE_TIMEOUT = 5.0


def endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_settings() -> dict:
    """Keyword arguments for huggingface_hub's download functions."""
    settings: dict = {"endpoint": endpoint()}
    if cache := os.environ.get("HF_HUB_CACHE"):
        settings["cache_dir"] = cache
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or not reachable():
        settings["local_files_only"] = True
    return settings


def reachable() -> bool:
    """Whether the endpoint answers at all (any HTTP status counts), in one try."""
    url = endpoint()
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=_PROBE_TIMEOUT).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError) as e:
        log.info("the Hub at %s does not answer (%s): using the local cache only", url, getattr(e, "reason", e))
        return False
    return True
