"""`quantkit serve --ray`: the same OpenAI app as replicas of a Ray Serve deployment.

Each replica is a Ray actor that loads the model into its own engine and runs `create_app` unchanged (API key,
reasoning format, metrics); Ray Serve's proxy listens on --host/--port and routes each request to a replica,
checks their health and starts a new replica when one dies. A replica takes one GPU when the cluster has GPUs,
else `--threads` CPUs. quantkit must be installed, with the model file at the same path, on every node that
runs a replica. Ray is an optional extra: `pip install "quantkit[ray]"`.
"""
from __future__ import annotations

import dataclasses
import logging
import signal
import threading
from collections.abc import Callable

from ..errors import InvalidArgumentError, ServeDeployError
from .app import ServeConfig, create_app

log = logging.getLogger(__name__)

APP_NAME = "quantkit"
INSTALL_HINT = 'install Ray Serve: pip install "quantkit[ray]"'
HEALTH_CHECK_PERIOD_S = 2.0
SHUTDOWN_TIMEOUT_S = 20.0


def import_ray():
    try:
        import ray
        from ray import serve
    except ImportError:
        raise InvalidArgumentError("--ray needs Ray Serve, which is not installed", hint=INSTALL_HINT) from None
    return ray, serve


class QuantkitReplica:
    """One replica: its engine is loaded before Ray routes anything to it (its startup waits for the load)."""

    def __init__(self, config: ServeConfig, load: Callable):
        self.config = config
        self.load = load
        self.backend = None  # (Ray Serve's wrapper owns the attribute `app`)

    def __serve_build_asgi_app__(self):
        from ray import serve

        name = serve.get_replica_context().replica_id.unique_id
        config = dataclasses.replace(self.config, replica=name, load_in_background=False)
        app = create_app(config, self.load)
        self.backend = app.state.backend
        return app

    def check_health(self) -> None:
        backend = self.backend
        if backend is not None and backend.engine is not None and not backend.engine.alive:
            raise RuntimeError("the engine stopped")


def replica_resources(cluster: dict, threads: int | None) -> dict:
    """Ray actor options for one replica: a GPU when the cluster has any, else `threads` CPUs (default 1)."""
    if cluster.get("GPU", 0) >= 1:
        return {"num_gpus": 1, "num_cpus": 1}
    return {"num_cpus": threads or 1}


def check_can_deploy(port: int) -> None:
    """Ray Serve is installed and the port is a fixed one (before anything starts)."""
    import_ray()
    if port == 0:
        raise InvalidArgumentError("--ray needs a fixed --port (Ray Serve's proxy cannot pick a free one)")


def deploy(config: ServeConfig, load: Callable, *, replicas: int, host: str, port: int, threads: int | None,
           address: str | None = None, max_ongoing_requests: int = 64) -> None:
    """Start (or join, with `address`) a Ray cluster, run `replicas` replicas behind Ray Serve's proxy on
    host:port, and block until the replicas are up. `serve_forever` then waits for SIGINT/SIGTERM."""
    ray, serve = import_ray()
    check_can_deploy(port)
    ray.init(address=address or None, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False, ignore_reinit_error=True)
    options = replica_resources(ray.cluster_resources(), threads)
    deployment = serve.deployment(serve.ingress()(QuantkitReplica), name=APP_NAME, num_replicas=replicas,
                                  ray_actor_options=options, max_ongoing_requests=max_ongoing_requests,
                                  health_check_period_s=HEALTH_CHECK_PERIOD_S)
    serve.start(http_options={"host": host, "port": port})
    try:
        serve.run(deployment.bind(config, load), name=APP_NAME, route_prefix="/", blocking=False)
    except RuntimeError as e:
        serve.shutdown()
        raise ServeDeployError(f"Ray Serve could not start the replicas: {_first_line(e)}") from None
    log.info("Ray Serve: %d replicas of %s, %s each", replicas, config.model_id, options)


def _first_line(e: BaseException) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(e).__name__


def serve_forever(address: str | None) -> None:
    """Block until SIGINT/SIGTERM, then remove the app (and the local cluster quantkit started)."""
    ray, serve = import_ray()
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        # bounded: a cluster whose processes took the same signal (Ctrl-C reaches the whole process group)
        # may not answer any more
        remove = threading.Thread(target=serve.delete if address else serve.shutdown,
                                  args=(APP_NAME,) if address else (), daemon=True)
        remove.start()
        remove.join(SHUTDOWN_TIMEOUT_S)
        ray.shutdown()
