"""Load on ``facenet serve``: verify and identify under concurrency, micro-batching on vs off.

Starts ``facenet serve`` as a real process on a free 127.0.0.1 port (loopback only), with a
fresh API key from ``facenet keys create`` (or ``--no-auth``), its key store, gallery and
``FACENET_CACHE`` in a temporary folder. Enrols a gallery of ``--identities`` LFW people (one
photo each, through the batch enrolment endpoint), then for each server mode

- **on**: the server's micro-batching (``--batch-size 32 --max-wait-ms 5``, the defaults), and
- **off**: the naive one-request-one-forward server (``--batch-size 1 --max-wait-ms 0``),

sends ``--requests`` verify requests (two photos of one person) and ``--requests`` identify
requests (another photo of an enrolled person) at each ``--concurrency`` with an httpx async
client, and reports requests/s, p50/p99 latency, errors (anything but 200; must be 0) and the
server's RSS before and after each cell, and the on/off throughput ratio per concurrency. Both
servers run at once (one gallery folder) and take turns cell by cell. A
final phase sends ``--rss-requests`` requests (verify and identify alternating) to the
micro-batching server and reports its RSS before, during and after (memory growth).

Bounded: every cell stops at ``--requests`` or ``--time-limit`` seconds, whichever comes first
(the table says how many were sent); the rate limit is raised out of the way.

    python benchmarks/serve.py [--model resnet_cpu:lfw-celeba] [--identities 1000]
        [--requests 200] [--concurrency 1 8 32] [--time-limit 60] [--rss-requests 10000]
        [--no-auth] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil

LFW = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lfw" / "lfw-deepfunneled"
MODES = {
    "on": ["--batch-size", "32", "--max-wait-ms", "5"],
    "off": ["--batch-size", "1", "--max-wait-ms", "0"],
}


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Photos:
    gallery: list[tuple[str, Path]]  # (name, photo) enrolled, one per identity
    verify: list[tuple[bytes, bytes]]  # two photos of one person
    identify: list[bytes]  # another photo of an enrolled person (the enrolled one if none)


def pick_photos(root: Path, identities: int, probes: int) -> Photos:
    """Enrol the first photo of ``identities`` people (those with 2+ photos first, so that
    probes are other photos of enrolled people); probes cycle over them."""
    people = sorted(p for p in root.iterdir() if p.is_dir())
    files = {p.name: sorted(p.glob("*.jpg")) for p in people}
    multi = [n for n in files if len(files[n]) >= 2]
    single = [n for n in files if len(files[n]) == 1]
    chosen = (multi + single)[:identities]
    if len(chosen) < identities:
        raise SystemExit(f"only {len(chosen)} identities in {root}")
    gallery = [(n, files[n][0]) for n in chosen]
    with_two = [n for n in chosen if len(files[n]) >= 2] or chosen
    verify, identify = [], []
    for i in range(probes):
        n = with_two[i % len(with_two)]
        f = files[n]
        verify.append((f[0].read_bytes(), f[-1].read_bytes()))
        identify.append(f[-1].read_bytes())
    return Photos(gallery, verify, identify)


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def facenet_exe() -> list[str]:
    exe = Path(sys.executable).with_name("facenet")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("facenet")
    return [found] if found else [sys.executable, "-m", "facenet"]


class Server:
    """``facenet serve`` as a child process on a free loopback port."""

    def __init__(self, work: Path, model: str, mode: str, no_auth: bool, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = facenet_exe() + [
            "serve", "--model", model, "--gallery", str(work / "gallery"),
            "--keys", str(work / "keys.sqlite"), "--host", "127.0.0.1", "--port", str(self.port),
            # why: the benchmark measures the server, not its per-key rate limit
            "--rate", "1e9", "--burst", "1000000", "--max-queue", "100000",
            "--log-level", "warning", *MODES[mode],
        ]  # fmt: skip
        if no_auth:
            cmd.append("--no-auth")
        self.cmd = cmd
        self.log = log.open("a")
        env = os.environ | {"FACENET_CACHE": str(work / "cache")}
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.ps = psutil.Process(self.proc.pid)

    def wait_ready(self, timeout: float = 300.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise SystemExit(
                    f"facenet serve exited with {self.proc.returncode}; see {self.log.name}"
                )
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise SystemExit(f"facenet serve not ready after {timeout:.0f} s; see {self.log.name}")

    def rss_mib(self) -> float:
        """The server's resident memory (with any children), MiB."""
        procs = [self.ps, *self.ps.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs) / 2**20

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def create_key(work: Path) -> str:
    out = subprocess.run(
        facenet_exe() + ["keys", "create", "--scope", "write", "--name", "benchmark",
                         "--keys", str(work / "keys.sqlite")],
        check=True, capture_output=True, text=True,
        env=os.environ | {"FACENET_CACHE": str(work / "cache")},
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


# --------------------------------------------------------------------------- the client


def enrol(url: str, headers: dict, gallery: list[tuple[str, Path]], per_request: int) -> float:
    """Enrol ``gallery`` through the batch endpoint; returns seconds taken."""
    t0 = time.perf_counter()
    with httpx.Client(base_url=url, headers=headers, timeout=600) as c:
        for start in range(0, len(gallery), per_request):
            chunk = gallery[start : start + per_request]
            files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for _, p in chunk]
            r = c.post("/v1/gallery/identities", files=files, data={"names": [n for n, _ in chunk]})
            if r.status_code != 200:
                raise SystemExit(f"enrolment failed: {r.status_code} {r.text[:300]}")
    return time.perf_counter() - t0


def request_of(kind: str, photos: Photos, i: int) -> tuple[str, dict]:
    if kind == "verify":
        a, b = photos.verify[i % len(photos.verify)]
        return "/v1/verify", {"image_a": ("a.jpg", a, "image/jpeg"),
                              "image_b": ("b.jpg", b, "image/jpeg")}  # fmt: skip
    return "/v1/identify", {"image": ("q.jpg", photos.identify[i % len(photos.identify)],
                                      "image/jpeg")}  # fmt: skip


async def load(
    url: str, headers: dict, photos: Photos, kinds: list[str], n: int, concurrency: int,
    time_limit: float, on_progress=None,
) -> dict:  # fmt: skip
    """``n`` requests (cycling over ``kinds``) from ``concurrency`` clients at once, stopping
    early at ``time_limit`` seconds; latencies of the successful ones."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    next_i = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=120, limits=limits
    ) as client:
        t0 = time.perf_counter()
        deadline = t0 + time_limit

        async def worker() -> None:
            nonlocal next_i
            while next_i < n and time.perf_counter() < deadline:
                i = next_i
                next_i += 1
                path, files = request_of(kinds[i % len(kinds)], photos, i)
                s = time.perf_counter()
                try:
                    r = await client.post(path, files=files)
                    code = str(r.status_code)
                except httpx.HTTPError as e:
                    code, r = type(e).__name__, None
                if code != "200" and not errors and r is not None:
                    print(f"  first error: {path} {code} {r.text[:300]}", flush=True)
                if code == "200":
                    latencies.append(time.perf_counter() - s)
                else:
                    errors[code] = errors.get(code, 0) + 1
                if on_progress is not None:
                    on_progress(i + 1)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {
        "sent": len(latencies) + sum(errors.values()),
        "ok": len(latencies),
        "errors": sum(errors.values()),
        "error_codes": errors,
        "wall_s": wall,
        "rps": len(latencies) / wall,
        "p50_ms": 1e3 * float(np.percentile(lat, 50)),
        "p99_ms": 1e3 * float(np.percentile(lat, 99)),
    }


# --------------------------------------------------------------------------- the benchmark


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet_cpu:lfw-celeba")
    ap.add_argument("--lfw", type=Path, default=LFW, help="LFW (deep-funneled) folder")
    ap.add_argument("--identities", type=int, default=1000, help="people enrolled (one photo each)")
    ap.add_argument("--enrol-batch", type=int, default=16, help="photos per enrolment request")
    ap.add_argument("--requests", type=int, default=200, help="requests per cell")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per cell at most")
    ap.add_argument("--modes", nargs="+", choices=list(MODES), default=["on", "off"])
    ap.add_argument("--rss-requests", type=int, default=10_000, help="0: no memory phase")
    ap.add_argument("--rss-concurrency", type=int, default=8)
    ap.add_argument("--rss-time-limit", type=float, default=1800.0)
    ap.add_argument("--no-auth", action="store_true", help="no API key (loopback only anyway)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args(argv)

    photos = pick_photos(args.lfw, args.identities, max(args.requests, 64))
    work = Path(tempfile.mkdtemp(prefix="facenet-serve-bench-"))
    log = work / "server.log"
    headers = {} if args.no_auth else {"Authorization": f"Bearer {create_key(work)}"}
    print(f"# facenet serve load: model {args.model}, {args.identities} identities, "
          f"{args.requests} requests/cell (<= {args.time_limit:g} s), concurrency "
          f"{args.concurrency}, auth {'off' if args.no_auth else 'on (API key)'}, "
          f"{os.cpu_count()} CPUs; server log {log}", flush=True)  # fmt: skip
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "cells": [], "rss": None}
    try:
        # why: all servers run at once and the modes take turns cell by cell, so that other
        # work on the machine (load drifting over minutes) weighs on both sides alike
        servers: dict[str, Server] = {}
        try:
            for mode in args.modes:
                t0 = time.perf_counter()
                server = servers[mode] = Server(work, args.model, mode, args.no_auth, log)
                server.wait_ready()
                print(f"[{mode}] ready in {time.perf_counter() - t0:.1f} s: "
                      f"{' '.join(server.cmd[1:])}", flush=True)  # fmt: skip
                if "enrol_s" not in results:  # one gallery folder, enrolled once, then read-only
                    results["enrol_s"] = enrol(
                        server.url, headers, photos.gallery, args.enrol_batch
                    )
                    print(f"[{mode}] enrolled {len(photos.gallery)} identities in "
                          f"{results['enrol_s']:.1f} s", flush=True)  # fmt: skip
                # warm-up: the first requests pay for lazy set-up (index load, allocator)
                asyncio.run(load(server.url, headers, photos, ["verify", "identify"], 8, 4, 60))
            for kind in ("verify", "identify"):
                for c in args.concurrency:
                    for mode, server in servers.items():
                        before = server.rss_mib()
                        r = asyncio.run(load(server.url, headers, photos, [kind], args.requests,
                                             c, args.time_limit))  # fmt: skip
                        r |= {"mode": mode, "kind": kind, "concurrency": c,
                              "rss_before_mib": before, "rss_after_mib": server.rss_mib()}  # fmt: skip
                        results["cells"].append(r)
                        print(f"[{mode}] {kind} c={c}: {r['ok']}/{r['sent']} ok, "
                              f"{r['rps']:.1f} req/s, p50 {r['p50_ms']:.0f} ms, "
                              f"p99 {r['p99_ms']:.0f} ms, errors {r['error_codes'] or 0}",
                              flush=True)  # fmt: skip
            if "on" in servers and args.rss_requests > 0:
                results["rss"] = rss_phase(servers["on"], headers, photos, args)
        finally:
            for server in servers.values():
                server.stop()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(results, args))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


def rss_phase(server: Server, headers: dict, photos: Photos, args: argparse.Namespace) -> dict:
    n = args.rss_requests
    samples = [(0, server.rss_mib())]
    marks = {n * q // 4 for q in (1, 2, 3)}

    def progress(done: int) -> None:
        if done in marks:
            samples.append((done, server.rss_mib()))

    r = asyncio.run(load(server.url, headers, photos, ["verify", "identify"], n,
                         args.rss_concurrency, args.rss_time_limit, progress))  # fmt: skip
    samples.append((r["sent"], server.rss_mib()))
    r |= {"samples": samples, "concurrency": args.rss_concurrency}
    print(
        f"[on] memory phase: {r['sent']} requests, RSS "
        + " -> ".join(f"{m:.0f}" for _, m in samples)
        + " MiB",
        flush=True,
    )
    return r


def table(results: dict, args: argparse.Namespace) -> str:
    cells = {(c["mode"], c["kind"], c["concurrency"]): c for c in results["cells"]}
    out = [
        f"Model `{args.model}`, gallery of {args.identities:,} LFW identities (enrolled in "
        f"{results.get('enrol_s', float('nan')):.1f} s), up to {args.requests} requests per cell "
        f"(<= {args.time_limit:g} s), {os.cpu_count()} CPUs. on = micro-batching "
        "(`--batch-size 32 --max-wait-ms 5`), off = one request, one forward "
        "(`--batch-size 1 --max-wait-ms 0`).",
        "",
        "| endpoint | conc. | on req/s | off req/s | on/off | on p50 / p99 ms | "
        "off p50 / p99 ms | errors on / off | RSS on MiB (before -> after) | "
        "RSS off MiB (before -> after) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in ("verify", "identify"):
        for c in args.concurrency:
            on, off = cells.get(("on", kind, c)), cells.get(("off", kind, c))

            def f(x: dict | None, key: str, fmt: str = "{:.1f}") -> str:
                return "-" if x is None else fmt.format(x[key])

            def lat(x: dict | None) -> str:
                return "-" if x is None else f"{x['p50_ms']:.0f} / {x['p99_ms']:.0f}"

            def rss(x: dict | None) -> str:
                return (
                    "-" if x is None else f"{x['rss_before_mib']:.0f} -> {x['rss_after_mib']:.0f}"
                )

            def err(x: dict | None) -> str:
                return "-" if x is None else f"{x['errors']} of {x['sent']}"

            ratio = f"{on['rps'] / off['rps']:.2f}x" if on and off and off["rps"] else "-"
            out.append(f"| {kind} | {c} | {f(on, 'rps')} | {f(off, 'rps')} | {ratio} | "
                       f"{lat(on)} | {lat(off)} | {err(on)} / {err(off)} | {rss(on)} | "
                       f"{rss(off)} |")  # fmt: skip
    r = results.get("rss")
    if r:
        s = r["samples"]
        out += [
            "",
            f"Memory phase (micro-batching on): {r['sent']:,} requests (`--rss-requests "
            f"{args.rss_requests}`; verify and identify alternating) at concurrency "
            f"{r['concurrency']}, {r['rps']:.1f} req/s, {r['errors']} errors. Server RSS "
            + " -> ".join(f"{m:.0f} MiB ({k:,})" for k, m in s)
            + f": {s[-1][1] - s[0][1]:+.0f} MiB overall, {s[-1][1] - s[1][1]:+.0f} MiB after "
            f"the first quarter.",
        ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
