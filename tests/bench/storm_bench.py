#!/usr/bin/env python3
"""The 8:00 storm (#15): N clients boot at once from one image, against bootserverd,
nbd-server (Debian's defaults) and nbdkit (file plugin), interleaved in one run, same image file.
``--servers`` may add bootserverd-inline: bootserverd with nbd.send_threads 0 (every reply sent
from the event loop, as before nbd.sendpool), for before/after figures in the same run.

    sudo .venv/bin/python tests/bench/storm_bench.py [--clients 60,120,250]
        [--modes warm,cold,spinning,shaped] [--trace debian|desktop|FILE] [--image FILE]

Each client is its own NBD connection from its own address (127.1.x.y on loopback; 10.78.x.y in
the shaped mode), all connect()ed in one burst; each replays the trace's reads in order, one
request in flight, every reply's bytes checked (tests/bench/storm_client.c: one C process, one
epoll loop, so the client costs less than the servers). Modes:

  warm      the image in the page cache
  cold      its pages evicted (posix_fadvise DONTNEED) before every run, checked with fincore
  spinning  cold, and the servers' blkio cgroup throttled to an emulated spinning disk
            (--iops 150 reads/s, --disk-mbps 100 MB/s on the image's block device). The cgroup v2
            io controller is not enabled on this machine; cgroup v1 blkio.throttle is, and does
            the same for reads
  prewarmed spinning, after bootserverd's own prewarm (bootserverd/images/prewarmer.py run_job, as
            the daemon runs it on publish and before school) brought the image's working set back
            from the evicted state: the whole image when it fits in --prewarm-share of RAM, else the
            trace's ranges (the trace is handed to it as a recorded boot of the image)
  shaped    warm, server and clients in two network namespaces joined by a veth pair with
            tbf 1 Gbit/s on both ends; compared with the physical floor N x distinct bytes / 125 MB/s

Per run: time until every session is open, per-client completion p50/p90/max (seconds from the
burst), request latency p50/p99, MB/s, server CPU seconds (its cpuacct cgroup, children
included: nbd-server forks per client), the client's own CPU seconds. Holds
/tmp/bootserverd-bench.lock; every run is bounded by --timeout. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import fcntl
import ipaddress
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from nbd.trace import distinct_bytes, parse  # noqa: E402
from tests.support.procs import end  # noqa: E402

LOCK = "/tmp/bootserverd-bench.lock"
WORK = Path("/var/tmp/bootserverd-bench/storm")
CG = "bsd-storm"
SRV_NS, CLI_NS = "bsd-storm-srv", "bsd-storm-cli"
SRV_IP = "10.78.0.1"
CLI_FIRST = "10.78.1.1"
TRACES = {"debian": HERE / "traces" / "debian12-boot.trace", "desktop": WORK / "desktop-synthetic.trace"}


def trace_file(name: str) -> Path:
    """A trace by name or path; the synthetic desktop trace is made from the real one when
    missing (tests/bench/traces/make_desktop_trace.py: deterministic, not kept in the tree)."""
    path = TRACES.get(name, Path(name))
    if name == "desktop" and not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(HERE / "traces" / "make_desktop_trace.py"), "--out", str(path)],
                       check=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ns_cmd(ns: str | None, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv] if ns else argv


def wait_port(host: str, port: int, ns: str | None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = subprocess.run(ns_cmd(ns, ["ss", "-Htln", f"sport = :{port}"]), capture_output=True, text=True,
                           timeout=10)
        if r.stdout.strip():
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {host}:{port}")


# --- cgroups (v1 here: cpuacct for CPU seconds, blkio for the emulated disk) ------------------

class Cgroup:
    def __init__(self, label: str, device: str) -> None:
        self.cpu = Path(f"/sys/fs/cgroup/cpuacct/{CG}/{label}")
        self.blkio = Path(f"/sys/fs/cgroup/blkio/{CG}/{label}")
        self.device = device
        for d in (self.cpu, self.blkio):
            d.mkdir(parents=True, exist_ok=True)

    def add(self, pid: int) -> None:
        for d in (self.cpu, self.blkio):
            (d / "cgroup.procs").write_text(str(pid))

    def cpu_seconds(self) -> float:
        return int((self.cpu / "cpuacct.usage").read_text()) / 1e9

    def kernel_seconds(self) -> float:
        """The part of cpu_seconds spent in the kernel (cpuacct.stat's system, in USER_HZ ticks)."""
        fields = dict(line.split() for line in (self.cpu / "cpuacct.stat").read_text().splitlines())
        return int(fields["system"]) / os.sysconf("SC_CLK_TCK")

    def throttle(self, iops: int, bps: int) -> None:
        (self.blkio / "blkio.throttle.read_iops_device").write_text(f"{self.device} {iops}")
        (self.blkio / "blkio.throttle.read_bps_device").write_text(f"{self.device} {bps}")

    def close(self) -> None:
        for d in (self.cpu, self.blkio):
            for leftover in (d / "cgroup.procs").read_text().split():   # ours only: started by us
                try:
                    Path(f"/sys/fs/cgroup/{d.parent.parent.name}/cgroup.procs").write_text(leftover)
                except OSError:
                    pass
            try:
                d.rmdir()
            except OSError:
                pass


# --- the servers ----------------------------------------------------------------------------

class Ours:
    label = "bootserverd"
    options: tuple[str, ...] = ()

    def __init__(self, image: Path, work: Path, host: str, ns: str | None, cg: Cgroup) -> None:
        self.port, self.export = free_port(), image.name[:-4]
        self.log = open(work / f"{self.label}.log", "w")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(ns_cmd(ns, [sys.executable, "-m", "tests.support.nbd", str(image.parent),
                                                 "--quiet", "--host", host, "--port", str(self.port),
                                                 "--max-connections", "1024", *self.options]),
                                     cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"bootserverd did not start: {line!r}")
        cg.add(self.proc.pid)
        self.pid = self.proc.pid

    def stop(self) -> None:
        end(self.proc, 10)
        self.log.close()


class OursInline(Ours):
    """Before nbd.sendpool: the event loop sends every reply itself (nbd.send_threads 0)."""
    label = "bootserverd-inline"
    options = ("--send-threads", "0")


class NbdServer:
    """Debian's defaults: the packaged config's [generic] section has no tuning (only user/group
    and includedir); one export, read-only; it forks a child per client."""
    label = "nbd-server"

    def __init__(self, image: Path, work: Path, host: str, ns: str | None, cg: Cgroup) -> None:
        self.port, self.export = free_port(), "img"
        conf, self.pidfile = work / "nbd-server.conf", work / "nbd-server.pid"
        conf.write_text(f"[generic]\n\tport = {self.port}\n\tlistenaddr = {host}\n"
                        f"[img]\n\texportname = {image}\n\treadonly = true\n")
        subprocess.run(ns_cmd(ns, ["nbd-server", "-C", str(conf), "-p", str(self.pidfile)]),
                       check=True, timeout=10, capture_output=True)
        deadline = time.monotonic() + 10
        while not self.pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.pid = int(self.pidfile.read_text())
        cg.add(self.pid)               # before any client: the children it forks inherit it
        wait_port(host, self.port, ns)

    def stop(self) -> None:
        try:
            os.kill(self.pid, 15)
        except OSError:
            pass


class Nbdkit:
    label = "nbdkit"

    def __init__(self, image: Path, work: Path, host: str, ns: str | None, cg: Cgroup) -> None:
        self.port, self.export = free_port(), ""
        self.proc = subprocess.Popen(ns_cmd(ns, ["nbdkit", "-f", "-r", "--exit-with-parent", "-i", host,
                                                 "-p", str(self.port), "file", str(image)]),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(host, self.port, ns)
        # ip netns exec execs the command: the PID is nbdkit's
        cg.add(self.proc.pid)
        self.pid = self.proc.pid

    def stop(self) -> None:
        end(self.proc, 10)


SERVERS = (Ours, OursInline, NbdServer, Nbdkit)


# --- the shaped link ------------------------------------------------------------------------

def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, timeout=30, capture_output=True)


def make_link(clients: int) -> None:
    drop_link()
    sh("ip", "netns", "add", SRV_NS)
    sh("ip", "netns", "add", CLI_NS)
    sh("ip", "link", "add", "bsds0", "netns", SRV_NS, "type", "veth", "peer", "name", "bsdc0", "netns", CLI_NS)
    sh("ip", "-n", SRV_NS, "addr", "add", f"{SRV_IP}/16", "dev", "bsds0")
    first = ipaddress.IPv4Address(CLI_FIRST)            # storm_client binds CLI_FIRST + i
    batch = "".join(f"addr add {first + i}/16 dev bsdc0\n" for i in range(clients))
    subprocess.run(["ip", "-n", CLI_NS, "-batch", "-"], input=batch, text=True, check=True, timeout=60)
    for ns, dev in ((SRV_NS, "bsds0"), (CLI_NS, "bsdc0")):
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", "1gbit",
           "burst", "256kb", "latency", "50ms")


def drop_link() -> None:
    for ns in (SRV_NS, CLI_NS):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


# --- one run --------------------------------------------------------------------------------

def resident(image: Path) -> int:
    r = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(image)],
                       capture_output=True, text=True, timeout=60, check=True)
    return int(r.stdout.split()[0])


def evict(image: Path) -> int:
    fd = os.open(image, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return resident(image)


def warm(image: Path) -> int:
    with open(image, "rb", buffering=0) as f:
        while f.read(16 << 20):
            pass
    return resident(image)


def prewarm(image: Path, trace_path: Path, work: Path, share: float) -> str:
    """bootserverd's prewarm job on the evicted image (in its own thread: it lowers that thread's
    priority, as the daemon does), with the trace as the image's one recorded boot."""
    import threading

    from bootserverd.images.prewarmer import Job, run_job
    name = image.name[:-4]
    traces = work / "traces"
    traces.mkdir(exist_ok=True)
    text = "\n".join(f"# image: {name}" if line.startswith("# image:") else line
                     for line in trace_path.read_text().splitlines()) + "\n"
    (traces / f"20261202T000000.000Z-bench-{name}.trace").write_text(text)
    job = Job(name, image, image.stat().st_size, "storm benchmark", (), ((name, image),), traces, share, 600.0)
    out = []
    worker = threading.Thread(target=lambda: out.append(run_job(job)))
    worker.start()
    worker.join(660)
    return out[0].line() if out else "prewarm did not finish"


def run_one(client: Path, srv, host: str, reads: Path, hashes: Path, n: int, source: str,
            ns: str | None, cg: Cgroup, timeout: float) -> dict:
    cpu0, kernel0 = cg.cpu_seconds(), cg.kernel_seconds()
    r = subprocess.run(ns_cmd(ns, [str(client), "run", host, str(srv.port), srv.export, str(reads), str(hashes),
                                   str(n), source, str(timeout)]),
                       capture_output=True, text=True, timeout=timeout + 30)
    res = json.loads(r.stdout) if r.stdout.strip().startswith("{") else {"errors": n, "first_error": r.stderr}
    res["server_cpu_s"] = cg.cpu_seconds() - cpu0
    res["server_kernel_s"] = cg.kernel_seconds() - kernel0
    return res


def start_profile(directory: Path | None, srv, mode: str, n: int):
    """py-spy (requirements-test.txt) on bootserverd for one run; None for the other servers."""
    if directory is None or srv.label != "bootserverd":
        return None
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"{mode}-{n}.txt"
    spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(srv.pid),
                            "--format", "raw", "--rate", "200", "--nonblocking", "--output", str(out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)                 # attached before the burst
    return spy, out


def stop_profile(spy: subprocess.Popen, out: Path) -> None:
    spy.send_signal(2)              # py-spy writes its file on SIGINT
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()
    if not out.exists():
        print(f"py-spy wrote no {out}", flush=True)
        return
    own: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        leaf = stack.split(";")[-1]
        own[leaf] = own.get(leaf, 0) + int(count)
    print(f"profile {out.name}: {total} samples; top functions by own samples:", flush=True)
    for leaf, count in sorted(own.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {100 * count / max(total, 1):5.1f}%  {leaf}", flush=True)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "?")
    return f"nproc {os.cpu_count()}, CPU {cpu}, kernel {platform.release()}"


def default_image(trace: str) -> Path:
    if trace == "debian":
        from tests.e2e.debian_image import debian_image
        return debian_image().path
    path = WORK / "desktop-4g.img"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for _ in range(64):
                f.write(os.urandom(64 << 20))
        os.replace(tmp, path)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="60,120,250")
    ap.add_argument("--modes", default="warm,cold,spinning")
    ap.add_argument("--trace", default="debian", help="debian, desktop or a trace file")
    ap.add_argument("--image", type=Path, help="default: the e2e Debian image (debian), a 4 GiB file (desktop)")
    ap.add_argument("--servers", default="bootserverd,nbd-server,nbdkit")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--iops", type=int, default=150)
    ap.add_argument("--disk-mbps", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("--prewarm-share", type=float, default=0.5,
                    help="images.prewarm.max_share for the prewarmed mode (the daemon's default 0.5)")
    ap.add_argument("--json", type=Path, help="also write every run's figures here")
    ap.add_argument("--profile", type=Path, help="py-spy records bootserverd during its runs: collapsed "
                    "stacks (DIR/<mode>-<N>.txt) and the top functions by own samples on stdout")
    ap.add_argument("--report", type=Path, nargs="+", help="only print the table of saved --json files")
    args = ap.parse_args()
    if args.report:
        saved = [r for path in args.report for r in json.loads(path.read_text())]
        trace = parse(trace_file(args.trace).read_text())
        reads_list = [(r.offset, r.length) for r in trace.reads]
        report(saved, distinct_bytes(reads_list), sum(n for _, n in reads_list))
        return 0
    for tool in ("nbd-server", "nbdkit", "gcc", "fincore", "tc"):
        if not shutil.which(tool):
            print(f"missing {tool}: install deps/apt/nbd.txt", file=sys.stderr)
            return 1
    trace_path = trace_file(args.trace)
    trace = parse(trace_path.read_text())
    with open(LOCK, "w") as lock:
        print(f"waiting for {LOCK}...", flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
        return measure(args, trace_path, trace)


def prepare(work: Path, image_src: Path, reads_list: list) -> tuple[Path, Path, Path, Path]:
    """In ``work``: the image (a hard link to ``image_src`` under img/, so every server reads the
    same file), the C client built, the trace's reads and each read's hash."""
    images = work / "img"
    images.mkdir()
    image = images / (image_src.name if image_src.name.endswith(".img") else "storm.img")
    try:
        os.link(image_src, image)          # the same file for all three servers, no copy
    except OSError:
        shutil.copy2(image_src, image)
    client = work / "storm_client"
    subprocess.run(["gcc", "-O2", "-o", str(client), str(HERE / "storm_client.c")], check=True, timeout=120)
    reads = work / "reads.txt"
    reads.write_text("".join(f"{o} {n}\n" for o, n in reads_list))
    hashes = work / "hashes.txt"
    subprocess.run([str(client), "hash", str(image), str(reads), str(hashes)], check=True, timeout=600)
    return image, client, reads, hashes


def measure(args, trace_path: Path, trace) -> int:
    image_src = args.image or default_image(args.trace)
    counts = [int(x) for x in args.clients.split(",")]
    modes = args.modes.split(",")
    chosen = [s for s in SERVERS if s.label in args.servers.split(",")]
    st = os.stat(image_src)
    device = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    reads_list = [(r.offset, r.length) for r in trace.reads]
    distinct = distinct_bytes(reads_list)
    per_client = sum(n for _, n in reads_list)
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="storm-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        image, client, reads, hashes = prepare(work, image_src, reads_list)
        if True:                                     # under the lock (main)
            print(f"machine: {machine()}; load average at start {open('/proc/loadavg').read().split()[:3]}", flush=True)
            print(f"trace {trace_path.name}: {len(reads_list)} reads, {per_client / 1e6:.1f} MB per client, "
                  f"{distinct / 1e6:.1f} MB distinct; image {image_src} ({st.st_size / 1e6:.0f} MB, device {device})",
                  flush=True)
            for mode in modes:
                shaped = mode == "shaped"
                for n in counts:
                    ns = SRV_NS if shaped else None
                    host = SRV_IP if shaped else "127.0.0.1"
                    if shaped:
                        make_link(n)
                    cgs = {s.label: Cgroup(s.label, device) for s in chosen}
                    live = []
                    try:
                        for s in chosen:
                            live.append(s(image, work, host, ns, cgs[s.label]))
                        for rnd in range(args.rounds):
                            order = live[rnd % len(live):] + live[:rnd % len(live)]
                            for srv in order:
                                cg = cgs[srv.label]
                                note = ""
                                if mode in ("cold", "spinning"):
                                    res_before = evict(image)
                                elif mode == "prewarmed":
                                    evict(image)
                                    note = prewarm(image, trace_path, work, args.prewarm_share)
                                    res_before = resident(image)
                                else:
                                    res_before = warm(image)
                                if mode in ("spinning", "prewarmed"):
                                    cg.throttle(args.iops, args.disk_mbps * 1_000_000)
                                spy = start_profile(args.profile, srv, mode, n)
                                try:
                                    res = run_one(client, srv, host, reads, hashes, n,
                                                  CLI_FIRST if shaped else "127.1.0.1",
                                                  CLI_NS if shaped else None, cg, args.timeout)
                                finally:
                                    if mode in ("spinning", "prewarmed"):
                                        cg.throttle(0, 0)
                                    if spy is not None:
                                        stop_profile(*spy)
                                res.update(server=srv.label, mode=mode, n=n, round=rnd + 1, prewarm=note,
                                           resident_before=res_before, load=open("/proc/loadavg").read().split()[0])
                                results.append(res)
                                print(f"{mode:8} N={n:3} {srv.label:11} open {res.get('all_open_s', 0):6.2f} s  "
                                      f"done p50 {res.get('done_p50_s', 0):6.2f} p90 {res.get('done_p90_s', 0):6.2f} "
                                      f"max {res.get('done_max_s', 0):6.2f} s  lat p50 {res.get('lat_p50_ms', 0):6.2f} "
                                      f"p99 {res.get('lat_p99_ms', 0):7.2f} ms  {res.get('mbps', 0):6.0f} MB/s  "
                                      f"cpu {res['server_cpu_s']:5.2f} s (kernel {res['server_kernel_s']:.2f}; client {res.get('client_cpu_s', 0):.2f})"
                                      f"  cached before {res_before / 1e6:.0f} MB  reconnects {res.get('reconnects', 0)}"
                                      + (f"  ERRORS {res['errors']}: {res.get('first_error')}" if res.get("errors") else "")
                                      + (f"\n  prewarm: {note}" if note else ""),
                                      flush=True)
                    finally:
                        for s in live:
                            s.stop()
                        time.sleep(0.5)
                        for cg in cgs.values():
                            cg.close()
                        if shaped:
                            drop_link()
            for d in (Path(f"/sys/fs/cgroup/cpuacct/{CG}"), Path(f"/sys/fs/cgroup/blkio/{CG}")):
                try:
                    d.rmdir()
                except OSError:
                    pass
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    report(results, distinct, per_client)
    return 1 if any(r.get("errors") for r in results) else 0


def report(results: list[dict], distinct: int, per_client: int) -> None:
    med = statistics.median
    keys = sorted({(r["mode"], r["n"]) for r in results}, key=lambda k: (k[0], k[1]))
    print()
    print("| mode | N | server | all open s (reconnects) | done p50 s | p90 s | max s | max/p50 | lat p50 ms | p99 ms "
          "| MB/s | server CPU s | client CPU s | ours/best C (max) |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode, n in keys:
        rows = {}
        for r in results:
            if (r["mode"], r["n"]) == (mode, n):
                rows.setdefault(r["server"], []).append(r)
        agg = {label: {k: med(x.get(k, 0) for x in rs) for k in
                       ("all_open_s", "done_p50_s", "done_p90_s", "done_max_s", "lat_p50_ms", "lat_p99_ms", "mbps",
                        "server_cpu_s", "client_cpu_s", "reconnects", "errors")} for label, rs in rows.items()}
        c_best = min((a["done_max_s"] for label, a in agg.items() if not label.startswith("bootserverd")
                      and not a["errors"]),
                     default=None)          # a server that left clients without a session is not "best"
        for label, a in agg.items():
            ratio = (f"{a['done_max_s'] / c_best:.2f}" if label.startswith("bootserverd") and c_best else "")
            floor = ""
            if mode == "shaped":
                floor = f" (floor {n * distinct / 125e6:.1f} s distinct, {n * per_client / 125e6:.1f} s all reads)"
            print(f"| {mode} | {n} | {label} | {a['all_open_s']:.2f} ({a['reconnects']:.0f}) | {a['done_p50_s']:.2f} | "
                  f"{a['done_p90_s']:.2f} | "
                  f"{a['done_max_s']:.2f}{floor} | {a['done_max_s'] / a['done_p50_s'] if a['done_p50_s'] else 0:.2f} | "
                  f"{a['lat_p50_ms']:.2f} | {a['lat_p99_ms']:.2f} | {a['mbps']:.0f} | {a['server_cpu_s']:.2f} | "
                  f"{a['client_cpu_s']:.2f} | {ratio}" + (f" {a['errors']:.0f} clients failed" if a["errors"] else "")
                  + " |")


if __name__ == "__main__":
    sys.exit(main())
