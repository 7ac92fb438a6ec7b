"""The OpenAI-compatible HTTP skin over the engine: `/v1/chat/completions` (the R1 thought in
`reasoning_content`, as llama-server's `--reasoning-format deepseek` and DeepSeek's API), `/v1/completions`,
`/v1/models`, `/health`, `/metrics`.

    app = create_app(ServeConfig(model_id="model.gguf"), lambda: Engine.open("model.gguf", n_parallel=4))
    run_server(app, bind("127.0.0.1", 8080))      # until SIGINT/SIGTERM
"""
from .app import REASONING_FORMATS, APIError, ServeConfig, create_app
from .server import bind, is_loopback
from .server import run as run_server

__all__ = ["APIError", "REASONING_FORMATS", "ServeConfig", "bind", "create_app", "is_loopback", "run_server"]
