"""OpenCDP collection benchmark: bare msgspec app vs OpenCDP with durable acks, on loopback with wrk.

Run it through ``benchmarks/run`` (which installs wrk when missing). Every figure printed comes from this
one run: the ratios compare OpenCDP with the bare app measured minutes apart on the same machine, the same
cores and the same request shape. Nothing is asserted; targets are printed next to the figures.

Environment (all optional):

=========================  ========  ================================================================
BENCH_DURATION             10        seconds of each measured wrk run
BENCH_WARMUP               3         seconds of warm-up (same load, not counted) before each run
BENCH_ROUNDS               2         max-throughput rounds per (app, shape); the best round is reported
BENCH_SINGLE_CONNECTIONS   64        wrk connections for single /v1/track calls
BENCH_BATCH_CONNECTIONS    16        wrk connections for /v1/batch calls
BENCH_BATCH_SIZE           100       events per batch
BENCH_WRK_THREADS          2         wrk threads (all on the client core)
BENCH_RATE_FRACTION        0.8       the paced run's rate, as a fraction of OpenCDP's best throughput
BENCH_SERVER_CPU           0         core the server process is pinned to
BENCH_CLIENT_CPU           1         core wrk is pinned to
BENCH_SOURCE_KIND          server    kind of the benchmark source (web/mobile fill context.ip)
BENCH_TMPDIR               /var/tmp  where the temporary data directories go (must be a real disk)
BENCH_LOAD_ROWS            200000    rows for the journal -> engine load benchmark (0 skips it)
BENCH_DIAGNOSE             1         also run OpenCDP with the loader held off (0 skips it)
BENCH_GOVERNANCE           0         1 also measures a "governed" OpenCDP: its source has a tracking plan,
                                     transformations and a PII policy (drop on ingest, mask, hash), same run
BENCH_GOVERNED_DROP        1         0 leaves out the governed source's drop policy (no PII work on ingest)
=========================  ========  ================================================================
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # after PYTHONPATH: another checkout of opencdp can be measured

from benchmarks.payloads import example_event_bytes, write_templates  # noqa: E402

PYTHON = sys.executable
LUA = ROOT / "benchmarks" / "wrk" / "collect.lua"


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass
class Config:
    duration: int = env_int("BENCH_DURATION", 10)
    warmup: int = env_int("BENCH_WARMUP", 3)
    rounds: int = env_int("BENCH_ROUNDS", 2)
    single_connections: int = env_int("BENCH_SINGLE_CONNECTIONS", 64)
    batch_connections: int = env_int("BENCH_BATCH_CONNECTIONS", 16)
    batch_size: int = env_int("BENCH_BATCH_SIZE", 100)
    wrk_threads: int = env_int("BENCH_WRK_THREADS", 2)
    rate_fraction: float = env_float("BENCH_RATE_FRACTION", 0.8)
    server_cpu: str = os.environ.get("BENCH_SERVER_CPU", "0")
    client_cpu: str = os.environ.get("BENCH_CLIENT_CPU", "1")
    source_kind: str = os.environ.get("BENCH_SOURCE_KIND", "server")
    tmpdir: str = os.environ.get("BENCH_TMPDIR", "/var/tmp")
    load_rows: int = env_int("BENCH_LOAD_ROWS", 200_000)
    diagnose: bool = env_int("BENCH_DIAGNOSE", 1) == 1

    def connections(self, shape: str) -> int:
        return self.single_connections if shape == "single" else self.batch_connections

    def events_per_request(self, shape: str) -> int:
        return 1 if shape == "single" else self.batch_size


@dataclass
class Result:
    app: str
    shape: str
    label: str
    events_per_request: int
    wrk: dict[str, Any]
    server_cpu: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return float(self.wrk["duration_us"]) / 1e6

    @property
    def ok_requests(self) -> int:
        return int(self.wrk["requests"]) - int(self.wrk["status_errors"])

    @property
    def events_per_second(self) -> float:
        return self.ok_requests * self.events_per_request / self.seconds

    @property
    def requests_per_second(self) -> float:
        return self.ok_requests / self.seconds

    @property
    def errors(self) -> int:
        w = self.wrk
        return int(w["status_errors"] + w["timeouts"] + w["connect_errors"] + w["read_errors"] + w["write_errors"])

    def ms(self, key: str) -> float:
        return float(self.wrk[key]) / 1000.0


# -- processes ------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
            if resp.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server did not become ready:\n{log.read_text()[-3000:]}")


class Server:
    """One server process pinned to the server core, in a fresh temporary directory."""

    def __init__(self, cfg: Config, app: str, work: Path, *, loader: bool = True) -> None:
        self.cfg, self.app = cfg, app
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"opencdp-bench-{app}-", dir=cfg.tmpdir))
        self.log = self.dir / "server.log"
        self.auth = "Basic " + base64.b64encode(b"bare:").decode()
        env = dict(os.environ)
        if app in ("opencdp", "governed"):
            data_dir = self.dir / "data"
            key = create_source(data_dir, cfg.source_kind, governed=app == "governed")
            self.auth = "Basic " + base64.b64encode(key.encode() + b":").decode()
            env |= {"OPENCDP_DATA_DIR": str(data_dir), "OPENCDP_FSYNC": "true"}
            if not loader:  # the loader still runs once at start-up (empty journal), then not for an hour
                env["OPENCDP_LOAD_INTERVAL_SECONDS"] = "3600"
            cmd = [PYTHON, "-m", "opencdp", "serve", "--port", str(self.port), "--log-level", "warning"]
            self.admin_token = (data_dir / "admin_token").read_text().strip()
        else:
            cmd = [PYTHON, str(ROOT / "benchmarks" / "bare_app.py"), "--port", str(self.port)]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                ["taskset", "-c", cfg.server_cpu, *cmd], cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        wait_ready(f"http://127.0.0.1:{self.port}/health", self.proc, self.log)

    def url(self, shape: str) -> str:
        return f"http://127.0.0.1:{self.port}/v1/{'track' if shape == 'single' else 'batch'}"

    def status(self) -> dict[str, Any] | None:
        if self.app == "bare":
            return None
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/admin/v1/status", headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
            return doc

    def stop(self) -> None:
        # The data is thrown away: no need to wait for the loader to drain on a graceful shutdown.
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def create_source(data_dir: Path, kind: str, *, governed: bool = False) -> str:
    """A source whose per-key rate limit is out of the way (the default, 1000 req/s, would answer 429).

    Also creates the admin token (the server would at start) so the benchmark can read ``/admin/v1/status``.
    """
    from opencdp.api.runtime import ensure_admin_token
    from opencdp.config import Settings
    from opencdp.model.pii import PiiPolicy
    from opencdp.model.plans import TrackingPlan
    from opencdp.model.sources import SourceLimits
    from opencdp.model.transforms import Transformations
    from opencdp.store import open_engine
    from opencdp.store.plans import PiiStore, PlanStore, TransformStore
    from opencdp.store.sources import SourceRegistry

    settings = Settings(data_dir=data_dir)
    ensure_admin_token(settings)
    engine = open_engine(settings)
    try:
        limits = SourceLimits.for_kind(kind).model_copy(update={"rate_per_second": 1e9, "burst": 10**9})  # type: ignore[arg-type]
        source = SourceRegistry(engine).create("bench", kind, limits)  # type: ignore[arg-type]
        if governed:  # every message: a dozen plan rules, two transformations, all fields classified
            PlanStore(engine).put(source.source_id, TrackingPlan.model_validate(BENCH_PLAN))
            TransformStore(engine).put(Transformations.model_validate(BENCH_RULES))
            drop = {source.source_id: BENCH_DROP} if GOVERNED_DROP else {}
            PiiStore(engine).put(PiiPolicy.model_validate({**BENCH_PII, "sources": drop}))
        return source.write_key
    finally:
        engine.close()


GOVERNANCE = os.environ.get("BENCH_GOVERNANCE", "0") == "1"
"""Also measure OpenCDP with a plan, transformations and PII policies on the benchmark source (A/B, same run)."""
BENCH_RULES = {
    "rules": [
        {"op": "rename_event", "from": "Product Add", "to": "Product Added"},
        {"op": "map_values", "property": "currency", "values": {"usd": "USD", "eur": "EUR"}},
    ]
}
BENCH_PII = {"default": {"email": "hash", "ip_address": "mask"}}
BENCH_DROP = {"payment_card": "drop"}
GOVERNED_DROP = os.environ.get("BENCH_GOVERNED_DROP", "1") == "1"
"""A class dropped on the ingest path: every request of the governed source is decoded and classified there."""
BENCH_PLAN = {
    "events": {
        "Product Added": {
            "type": "object",
            "required": ["product_id", "price", "quantity"],
            "properties": {
                "product_id": {"type": "string"},
                "sku": {"type": "string", "pattern": "^[A-Z0-9-]+$"},
                "price": {"type": "number", "minimum": 0},
                "quantity": {"type": "integer", "minimum": 1, "maximum": 100},
                "currency": {"type": "string", "enum": ["USD", "EUR", "GBP"]},
                "coupon": {"type": ["string", "null"], "maxLength": 20},
            },
        }
    },
    "unplanned": "block",
    "violations": "flag",
}

_run_counter = 0


def wrk(
    cfg: Config, server: Server, shape: str, seconds: int, templates: dict[str, Path], rate: float = 0
) -> dict[str, Any]:
    global _run_counter
    _run_counter += 1
    tag = f"bench{os.getpid():07d}r{_run_counter:03d}"[:16]
    per_thread = rate / cfg.wrk_threads if rate else 0
    cmd = [
        "taskset", "-c", cfg.client_cpu, "wrk",
        "-t", str(cfg.wrk_threads), "-c", str(cfg.connections(shape)), "-d", f"{seconds}s", "--timeout", "10s",
        "-s", str(LUA), server.url(shape), "--", str(templates[shape]), server.auth, tag, f"{per_thread:.3f}",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("WRKJSON "):
            doc: dict[str, Any] = json.loads(line[len("WRKJSON ") :])
            return doc
    raise RuntimeError(f"no summary from wrk:\n{out}")


def measure(
    cfg: Config,
    app: str,
    shape: str,
    templates: dict[str, Path],
    work: Path,
    *,
    rate: float = 0,
    label: str = "max",
    loader: bool = True,
) -> Result:
    server = Server(cfg, app, work, loader=loader)
    try:
        if cfg.warmup:
            wrk(cfg, server, shape, cfg.warmup, templates, rate)
        before = server.status()
        cpu0 = cpu_seconds(server.proc.pid)
        t0 = time.monotonic()
        summary = wrk(cfg, server, shape, cfg.duration, templates, rate)
        elapsed = time.monotonic() - t0
        cpu = (cpu_seconds(server.proc.pid) - cpu0) / elapsed
        after = server.status()
        extra: dict[str, Any] = {}
        if before and after:
            extra["fsyncs_per_s"] = (after["journal"]["group_commits"] - before["journal"]["group_commits"]) / elapsed
            seg = 64 * 1024 * 1024
            lag = (after["journal"]["segment"] - after["loaded"]["segment"]) * seg + (
                after["journal"]["offset"] - after["loaded"]["offset"]
            )
            extra["loader_backlog_mb"] = max(0, lag) / 1e6
        if server.proc.poll() is not None:
            raise RuntimeError(f"server died:\n{server.log.read_text()[-3000:]}")
        return Result(app, shape, label, cfg.events_per_request(shape), summary, cpu, extra)
    finally:
        server.stop()


# -- report ---------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def row(r: Result) -> str:
    extra = ""
    if "fsyncs_per_s" in r.extra:
        extra = f"  fsync/s {r.extra['fsyncs_per_s']:7.0f}  backlog {r.extra['loader_backlog_mb']:6.1f} MB"
    late = f"  late {int(r.wrk['late'])}" if r.label != "max" else ""
    return (
        f"  {r.app:8} {r.shape:6} {r.label:>10}  {r.events_per_second:10,.0f} ev/s  {r.requests_per_second:8,.0f} req/s"
        f"  p50 {r.ms('p50_us'):7.2f} ms  p99 {r.ms('p99_us'):7.2f} ms  cpu {100 * r.server_cpu:4.0f}%"
        f"  errors {r.errors}{late}{extra}"
    )


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def print_conditions(cfg: Config, templates: dict[str, Path]) -> None:
    system = f"{platform.system()} {platform.release()}"
    batch_bytes = templates["batch"].stat().st_size
    print("OpenCDP collection benchmark (figures only; nothing is asserted)")
    print(f"  machine      {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, {system}")
    print(f"  server       1 process, uvicorn httptools + uvloop, no access log, pinned to CPU {cfg.server_cpu}")
    print(f"  client       wrk -t{cfg.wrk_threads} pinned to CPU {cfg.client_cpu}, loopback, keep-alive")
    print(f"  payload      Segment track event of {example_event_bytes()} B, a unique messageId per event;")
    print(f"               batch = {cfg.batch_size} events in one /v1/batch body of {batch_bytes:,} B")
    print(f"  connections  single {cfg.single_connections}, batch {cfg.batch_connections}")
    print(f"  durations    warm-up {cfg.warmup} s + measured {cfg.duration} s per run, fresh server per run,")
    print(f"               {cfg.rounds} max-throughput rounds per (app, shape) alternating bare/OpenCDP, best kept")
    print("  OpenCDP      DuckDB engine, fsync on (ack after fdatasync), loader running every 0.2 s, data dir")
    print(f"               in a new directory under {cfg.tmpdir}; source kind {cfg.source_kind!r}, rate limit raised")
    print(flush=True)


def summary(cfg: Config, best: dict[tuple[str, str], Result], paced: dict[tuple[str, str], Result]) -> None:
    print("\nSummary (best round of each; ratio = OpenCDP / bare app, same request shape, same run):")
    print(f"  {'shape':7} {'bare ev/s':>10} {'OpenCDP ev/s':>13} {'ratio':>6} {'target':>8}   "
          f"{'bare p50/p99 ms':>16}  {'OpenCDP p50/p99 ms':>19}")  # fmt: skip
    for shape in ("single", "batch"):
        b, o = best[("bare", shape)], best[("opencdp", shape)]
        ratio = o.events_per_second / b.events_per_second
        print(
            f"  {shape:7} {b.events_per_second:10,.0f} {o.events_per_second:13,.0f} {ratio:6.2f}  >= 0.60   "
            f"{b.ms('p50_us'):7.2f} / {b.ms('p99_us'):<7.2f}  {o.ms('p50_us'):9.2f} / {o.ms('p99_us'):<8.2f}"
            f"  {verdict(ratio >= 0.6)}"
        )
    if ("governed", "single") in best:
        for shape in ("single", "batch"):
            o, g = best[("opencdp", shape)], best[("governed", shape)]
            ratio = g.events_per_second / o.events_per_second
            print(
                f"  governed {shape}: {g.events_per_second:,.0f} ev/s with plan, transformations and PII policies "
                f"= {ratio:.2f} of OpenCDP without ({o.events_per_second:,.0f}), target >= 0.80  "
                f"{verdict(ratio >= 0.8)}"
            )
    pct = f"{100 * cfg.rate_fraction:.0f}%"
    for shape, limit in (("single", 10.0), ("batch", 100.0)):
        o, b = paced[("opencdp", shape)], paced[("bare", shape)]
        print(
            f"  p99 at {pct} ({shape}, {o.events_per_second:,.0f} ev/s): {o.ms('p99_us'):.2f} ms, "
            f"target <= {limit:.0f} ms  {verdict(o.ms('p99_us') <= limit)}"
            f"  (bare app, same rate: {b.ms('p99_us'):.2f} ms)"
        )


def main() -> None:
    cfg = Config()
    work = Path(tempfile.mkdtemp(prefix="opencdp-bench-", dir=cfg.tmpdir))
    templates = write_templates(work / "templates", cfg.batch_size)
    print_conditions(cfg, templates)

    best: dict[tuple[str, str], Result] = {}
    print("Max throughput (as fast as wrk's connections go):")
    for shape in ("single", "batch"):
        for n in range(cfg.rounds):
            apps = ("bare", "opencdp", "governed") if GOVERNANCE else ("bare", "opencdp")
            for app in apps if n % 2 == 0 else tuple(reversed(apps)):
                r = measure(cfg, app, shape, templates, work)
                print(row(r), flush=True)
                if (app, shape) not in best or r.events_per_second > best[(app, shape)].events_per_second:
                    best[(app, shape)] = r

    print(f"\nPaced at {100 * cfg.rate_fraction:.0f}% of OpenCDP's best (the bare app at the same rate for reference):")
    paced: dict[tuple[str, str], Result] = {}
    for shape in ("single", "batch"):
        rate = cfg.rate_fraction * best[("opencdp", shape)].requests_per_second
        for app in ("opencdp", "bare"):
            r = measure(cfg, app, shape, templates, work, rate=rate, label=f"{rate:,.0f}/s")
            paced[(app, shape)] = r
            print(row(r), flush=True)

    if cfg.diagnose:
        print("\nDiagnostic: OpenCDP with the loader held off for the run (what collection alone costs):")
        for shape in ("single", "batch"):
            r = measure(cfg, "opencdp", shape, templates, work, label="no loader", loader=False)
            print(row(r), flush=True)

    load: dict[str, Any] | None = None
    if cfg.load_rows > 0:
        print(
            f"\nLoad (journal -> DuckDB raw log, {cfg.load_rows:,} rows, pinned to CPU {cfg.server_cpu}):", flush=True
        )
        cmd = ["taskset", "-c", cfg.server_cpu, PYTHON, str(ROOT / "benchmarks" / "load_bench.py"),
               "--rows", str(cfg.load_rows), "--tmpdir", cfg.tmpdir]  # fmt: skip
        for line in subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("LOADJSON "):
                load = json.loads(line[len("LOADJSON ") :])
            else:
                print(line)

    summary(cfg, best, paced)
    if load is not None:
        rate = load["load_all_rows_per_s"]
        print(
            f"  load into the engine: {rate:,.0f} rows/s, target >= 100,000 rows/s  {verdict(rate >= 100_000)}"
            f"  (same run: DuckDB read_json {load['read_json_rows_per_s']:,.0f} rows/s, "
            f"DuckDB read_csv of the journal {load['read_csv_rows_per_s']:,.0f} rows/s)"
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
