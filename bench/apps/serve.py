"""Serve one baseline app (`bare:app`, `raw_db:app`, ...) as the generated service's server.py
serves its own, on either server: `python serve.py bare:app --server granian --port 8001`.

Run with a rendered project's interpreter (the render of that server: a Granian render has no
uvicorn, and the other way round). One worker, uvloop; Granian over HTTP/1.1, uvicorn with
httptools; no server access log, no uvicorn log config or server header. The generated service
itself runs as users run it, `python -m <package>`.
"""

import argparse


def serve_with_granian(target: str, port: int) -> None:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops

    Granian(
        target,
        address="127.0.0.1",
        port=port,
        workers=1,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        websockets=False,
        log_access=False,
    ).serve()


def serve_with_uvicorn(target: str, port: int) -> None:
    import uvicorn

    uvicorn.run(
        target,
        host="127.0.0.1",
        port=port,
        workers=1,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        server_header=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("target", help="module:attribute")
    parser.add_argument("--server", choices=["granian", "uvicorn"], required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    serve = serve_with_granian if args.server == "granian" else serve_with_uvicorn
    serve(args.target, args.port)


if __name__ == "__main__":
    main()
