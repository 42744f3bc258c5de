"""A minimal HTTP/1.1 keep-alive load generator (asyncio streams, one process).

    python loadgen.py HOST PORT PATH BODY_FILE SECONDS CONCURRENCY [--trace FILE]

Each of CONCURRENCY connections sends the same pre-encoded POST back to back. Prints one
JSON line: requests, failures (non-200 or broken connections), rps, p50/p99 ms. With
--trace, writes "wall_time status version worker" per response (x-mlplat-version and
x-mlplat-worker headers; "-" when absent).
Kept deliberately cheap per request so the client is not what is measured.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time


async def worker(host, port, request, deadline, lat, trace, counts):
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        counts["failed"] += 1
        return
    try:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, version, pid = 0, b"-", b"-"
            for line in head.split(b"\r\n")[1:]:
                lower = line.lower()
                if lower.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
                elif lower.startswith(b"x-mlplat-version:"):
                    version = line.split(b":", 1)[1].strip()
                elif lower.startswith(b"x-mlplat-worker:"):
                    pid = line.split(b":", 1)[1].strip()
            if length:
                await reader.readexactly(length)
            lat.append(time.perf_counter() - start)
            if status != 200:
                counts["failed"] += 1
            if trace is not None:
                trace.append((time.time(), status, version.decode(), pid.decode()))
    except (OSError, asyncio.IncompleteReadError, ValueError):
        counts["failed"] += 1
    finally:
        writer.close()


async def main(host, port, path, body, seconds, concurrency, trace_file):
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    lat: list[float] = []
    trace = [] if trace_file else None
    counts = {"failed": 0}
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(worker(host, port, request, deadline, lat, trace, counts) for _ in range(concurrency)))
    took = time.perf_counter() - started
    lat.sort()
    pick = lambda q: round(lat[min(len(lat) - 1, int(len(lat) * q))] * 1000, 2) if lat else None  # noqa: E731
    print(json.dumps({"requests": len(lat), "failed": counts["failed"], "rps": round(len(lat) / took, 1),
                      "p50_ms": pick(0.50), "p99_ms": pick(0.99)}))
    if trace_file:
        with open(trace_file, "w") as f:
            for t, s, v, w in trace:
                f.write(f"{t:.6f} {s} {v} {w}\n")


if __name__ == "__main__":
    args = sys.argv[1:]
    trace_file = None
    if "--trace" in args:
        i = args.index("--trace")
        trace_file = args[i + 1]
        del args[i:i + 2]
    host, port, path, body_file, seconds, concurrency = args
    asyncio.run(main(host, int(port), path, open(body_file, "rb").read(), float(seconds), int(concurrency), trace_file))
