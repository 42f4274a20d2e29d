"""Serve one ASGI app with the generated service's uvicorn settings, stated explicitly.

Run with a rendered project's interpreter: `python serve.py bare:app` or
`python serve.py my_service.main:create_app --factory`. The keyword arguments mirror the
generated `__main__.py` (one worker, no uvicorn log config, no server access log, no server
header); loop and HTTP implementation are pinned so every app runs on the same ones. The
generated service also gets its connection limits (`<package>.server.connection_options`): its
HTTP protocol is uvicorn's httptools one with a bounded request head, as `python -m` serves it.
"""

import argparse
import importlib
from typing import Any

import uvicorn


def connection_options(target: str) -> dict[str, Any]:
    """The generated service's protocol and limits from its settings; none for a bare app."""
    package = target.partition(".")[0]
    try:
        server = importlib.import_module(f"{package}.server")
        config = importlib.import_module(f"{package}.config")
    except ModuleNotFoundError:
        return {"http": "httptools"}
    return dict(server.connection_options(config.get_settings()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("target", help="module:attribute")
    parser.add_argument("--factory", action="store_true")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        args.target,
        factory=args.factory,
        host="127.0.0.1",
        port=args.port,
        workers=1,
        loop="uvloop",
        log_config=None,
        access_log=False,
        server_header=False,
        **connection_options(args.target),
    )


if __name__ == "__main__":
    main()
