"""nginx as the C peer of our HTTP service in benchmarks: one worker, sendfile, serving a directory."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.support.http import free_tcp_port
from tests.support.procs import end


def start_nginx(root: Path, work: Path) -> tuple[subprocess.Popen, int]:
    port = free_tcp_port()
    conf = work / "nginx.conf"
    conf.write_text(f"""
user {"root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")};
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path {work}/nginx-tmp;
  proxy_temp_path {work}/nginx-tmp;
  fastcgi_temp_path {work}/nginx-tmp;
  uwsgi_temp_path {work}/nginx-tmp;
  scgi_temp_path {work}/nginx-tmp;
  server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
""")
    (work / "nginx-tmp").mkdir(exist_ok=True)
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work), "-g", "daemon off;"])
    end = time.monotonic() + 10
    while time.monotonic() < end:
        probe = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=5)
        if probe.stdout not in ("", "000"):
            return proc, port
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited: {(work / 'nginx-error.log').read_text()}")
        time.sleep(0.1)
    return proc, port


def stop(proc: subprocess.Popen) -> None:
    end(proc)
