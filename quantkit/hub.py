"""How quantkit talks to the Hugging Face Hub: huggingface_hub reads its environment once, at import; quantkit
reads it at each call, so that HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE set later (by a user's shell
wrapper, or a test server) still count, for every download alike."""
from __future__ import annotations

import os


def endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_settings() -> dict:
    """Keyword arguments for huggingface_hub's download functions."""
    settings: dict = {"endpoint": endpoint()}
    if cache := os.environ.get("HF_HUB_CACHE"):
        settings["cache_dir"] = cache
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        settings["local_files_only"] = True
    return settings
