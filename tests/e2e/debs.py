"""Debian packages for the end-to-end images: fetched with ``apt-get download`` into a cache
outside the repo and unpacked with ``dpkg-deb -x``; nothing is installed on the host. Our own
``bootserverd-client`` is built from this tree (tools/build-deb) and cached by its inputs."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

CACHE = Path(os.environ.get("BOOTSERVERD_E2E_CACHE", "/var/cache/bootserverd-tests/e2e"))
DEBS = CACHE / "debs"
REPO = Path(__file__).resolve().parents[2]
# What makes the bootserverd-client .deb (debian/bootserverd-client.install names its files):
# a change in any of these is a new package, so a new cache key for the images that install it.
CLIENT_INPUTS = ("bootserverd_client/", "client/", "debian/bootserverd-client", "debian/control", "debian/rules",
                 "debian/changelog", "debian/copyright", "debian/source/", "debian/wrappers/bootserverd-image-update",
                 "debian/bootserverd-image-update.1", "tools/build-deb")


def _run(argv: list[str], timeout: float = 600, **kw) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


@contextlib.contextmanager
def locked(name: str):
    """Serialise builders across concurrent test runs (one cache, several engineers)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def apt_state() -> str:
    """Changes when the package index does (apt-get update): the memo key below."""
    lists = Path("/var/lib/apt/lists")
    return str(max((p.stat().st_mtime_ns for p in lists.glob("*_Packages*")), default=0))


def memo(name: str, compute):
    """``compute()`` (JSON-able), remembered until the package index changes: apt-cache
    takes seconds per call on a loaded machine and the answers only change with the index."""
    path = CACHE / f"{name}.json"
    state = apt_state()
    try:
        saved = json.loads(path.read_text())
        if saved["apt"] == state:
            return saved["value"]
    except (OSError, ValueError, KeyError):
        pass
    value = compute()
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"apt": state, "value": value}))
    os.replace(tmp, path)
    return value


def candidate(package: str) -> str:
    """The version apt would fetch now (from the local package index, no network)."""
    out = _run(["apt-cache", "policy", package], timeout=60)
    match = re.search(r"Candidate:\s*(\S+)", out)
    if not match or match[1] == "(none)":
        raise RuntimeError(f"apt knows no candidate for {package} (apt-get update?)")
    return match[1]


def depends(package: str) -> list[str]:
    out = _run(["apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts",
                "--no-breaks", "--no-replaces", "--no-enhances", package], timeout=60)
    names = []
    for line in out.splitlines():
        match = re.match(r"\s*\|?(?:Pre)?Depends:\s*([^<\s]+)", line)
        if match:
            names.append(match[1].split(":")[0])
    return names


def kernel_package() -> str:
    """linux-image-amd64 is a metapackage: the real package it points at now."""
    for name in depends("linux-image-amd64"):
        if name.startswith("linux-image-"):
            return name
    raise RuntimeError("linux-image-amd64 names no kernel package")


def library_closure(package: str) -> list[str]:
    """The package and the shared-library packages it needs, recursively (lib*: no debconf)."""
    seen, todo = [], [package]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.append(name)
        todo += [d for d in depends(name) if d.startswith("lib") and d not in seen]
    return seen


def download(package: str) -> Path:
    """The cached .deb of the candidate version, fetched once."""
    DEBS.mkdir(parents=True, exist_ok=True)
    version = candidate(package)
    quoted = version.replace(":", "%3a")
    for path in DEBS.glob(f"{package}_*.deb"):
        if path.name.startswith(f"{package}_{quoted}_") or path.name.startswith(f"{package}_{version}_"):
            return path
    with locked("download"):
        before = set(DEBS.iterdir())
        _run(["apt-get", "download", f"{package}={version}"], cwd=DEBS)
        new = [p for p in set(DEBS.iterdir()) - before if p.suffix == ".deb"]
    if len(new) != 1:
        raise RuntimeError(f"apt-get download {package} left {new}")
    return new[0]


def unpack(deb: Path, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    _run(["dpkg-deb", "-x", str(deb), str(root)])


def unpacked(deb: Path) -> Path:
    """``deb`` unpacked once into the cache (a kernel package takes ~30 s to unpack)."""
    root = CACHE / "unpacked" / deb.stem
    if (root / ".complete").is_file():
        return root
    with locked("unpack"):
        if not (root / ".complete").is_file():
            partial = root.with_name(root.name + ".partial")
            subprocess.run(["rm", "-rf", str(partial), str(root)], check=True, timeout=120)
            unpack(deb, partial)
            partial.rename(root)
            (root / ".complete").touch()
    return root


def client_key() -> str:
    """sha256 over the client package's inputs in the tree (committed or not): path, mode, bytes."""
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, timeout=60)
    digest = hashlib.sha256()
    for name in sorted(set(listed.split("\0")) - {""}):
        path = REPO / name
        if name.startswith(CLIENT_INPUTS) and path.is_file():
            data = path.read_bytes()
            if name == "debian/control":          # the server's paragraph is not the client's
                data = b"\n\n".join(p for p in re.split(rb"\n\s*\n", data)
                                     if not p.lstrip().startswith(b"Package:")
                                     or p.lstrip().startswith(b"Package: bootserverd-client\n"))
            digest.update(f"{name}\0{path.stat().st_mode & 0o111:o}\0".encode())
            digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()[:16]


def client_deb() -> Path:
    """The bootserverd-client .deb built from this tree (tools/build-deb: dpkg-buildpackage +
    lintian), once per set of inputs, kept in the cache."""
    key = client_key()
    out = CACHE / f"client-deb-{key}"

    def found() -> Path | None:
        debs = sorted(out.glob("bootserverd-client_*_all.deb"))
        return debs[0] if debs else None

    if found():
        return found()
    with locked("client-deb"):
        if not found():
            partial = CACHE / f".client-deb-{key}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            _run([str(REPO / "tools" / "build-deb"), str(partial)], timeout=1200, cwd=REPO)
            for entry in partial.iterdir():       # keep the .debs and the logs, not the build tree
                if entry.is_dir():
                    shutil.rmtree(entry)
            partial.rename(out)       # earlier keys stay: ~100 kB each, and another tree may want them
    return found()
