"""Which ASGI/HTTP stack fits the gateway's event loop for the web console (issue 17)?

Serves the same Jinja2 page (a 50-row approvals table, autoescaped) from Starlette on uvicorn
(h11, as the console runs it) and from aiohttp, each in its own server process on uvloop, and
drives it from a separate client process with keep-alive connections. Reports requests/s, the
server's CPU milliseconds per request, its import time and resident memory after start.

    .venv/bin/python benchmarks/web_stack.py [--requests 3000] [--clients 8]

aiohttp is not a dependency of dlpgate: install it into the venv by hand to compare.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import resource
import socket
import sys
import threading
import time

ROWS = [{"id": f"{i:019x}", "sender": f"user{i}@soumu.example.jp", "subject": f"<b>名簿 {i}</b> & co",
         "top": "my_number x3 (high)", "records": i} for i in range(50)]
TEMPLATE = """<!doctype html><html lang="ja"><head><meta charset="utf-8"><title>承認待ち</title></head><body>
<table>{% for r in rows %}<tr><td>{{ r.id }}</td><td>{{ r.sender }}</td><td><a href="/m/{{ r.id }}">{{ r.subject }}</a></td>
<td>{{ r.top }}</td><td>{{ r.records }}</td></tr>{% endfor %}</table></body></html>"""


def _rss_kb() -> int:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def serve(stack: str, port_q: mp.Queue, stop_ev: mp.Event) -> None:  # type: ignore[type-arg]
    import asyncio

    import uvloop
    from jinja2 import Environment

    rss0 = _rss_kb()
    t0 = time.perf_counter()
    tmpl = Environment(autoescape=True).from_string(TEMPLATE)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)

    async def main() -> None:
        if stack == "starlette":
            import uvicorn
            from starlette.applications import Starlette
            from starlette.responses import HTMLResponse
            from starlette.routing import Route

            async def page(request):  # noqa: ANN001, ANN202
                return HTMLResponse(tmpl.render(rows=ROWS))

            app = Starlette(routes=[Route("/", page)])
            cfg = uvicorn.Config(app, lifespan="off", access_log=False, log_config=None, http="h11", ws="none")
            server = uvicorn.Server(cfg)
            cfg.load()
            import_s = time.perf_counter() - t0
            task = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started:
                await asyncio.sleep(0.01)
        else:
            from aiohttp import web

            async def page(request):  # noqa: ANN001, ANN202
                return web.Response(text=tmpl.render(rows=ROWS), content_type="text/html")

            app = web.Application()
            app.router.add_get("/", page)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.SockSite(runner, sock)
            import_s = time.perf_counter() - t0
            await site.start()
        port_q.put((sock.getsockname()[1], import_s, _rss_kb() - rss0))
        while not stop_ev.is_set():
            await asyncio.sleep(0.05)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        port_q.put(ru.ru_utime + ru.ru_stime)
        if stack == "starlette":
            server.should_exit = True
            await task
        else:
            await runner.cleanup()

    uvloop.run(main())


def drive(port: int, total: int, clients: int) -> float:
    per = total // clients
    errors: list[str] = []

    def worker() -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(per):
            c.request("GET", "/")
            r = c.getresponse()
            body = r.read()
            if r.status != 200 or b"&lt;b&gt;" not in body:
                errors.append(str(r.status))
        c.close()

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise SystemExit(f"errors: {errors[:3]}")
    return per * clients / (time.perf_counter() - t0)


def run(stack: str, total: int, clients: int) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    q, ev = ctx.Queue(), ctx.Event()
    p = ctx.Process(target=serve, args=(stack, q, ev))
    p.start()
    port, import_s, rss_kb = q.get(timeout=60)
    drive(port, clients * 20, clients)  # warm-up
    rps = drive(port, total, clients)
    ev.set()
    cpu = q.get(timeout=60)
    p.join(timeout=30)
    return {"requests_per_s": round(rps, 1), "server_cpu_ms_per_request": round(cpu * 1000 / (total + clients * 20), 3),
            "startup_import_ms": round(import_s * 1000, 1), "rss_added_mb": round(rss_kb / 1024, 1)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=8)
    a = ap.parse_args()
    out = {}
    for stack in ("starlette", "aiohttp"):
        if stack == "aiohttp":
            try:
                import aiohttp  # noqa: F401
            except ImportError:
                print("aiohttp not installed: skipped", file=sys.stderr)
                continue
        out[stack] = run(stack, a.requests, a.clients)
        print(json.dumps({stack: out[stack]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
