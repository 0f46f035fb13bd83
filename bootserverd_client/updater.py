"""``bootserverd-image-update``: a laptop keeps its image current from the boot server.

    bootserverd-image-update --server http://bootserver:8080 [--dir /images]   update now
    bootserverd-image-update --boot-check     early at boot: roll back an unconfirmed trial image
    bootserverd-image-update --mark-good      the booted system works: keep the new image
    bootserverd-image-update --rollback       swap back to the backup image
    bootserverd-image-update --status         print the state

The image directory holds ``<name>.img`` files and ``bootserverd-images.json``, naming the
current image, the backup (the previous one: A/B) and whether the current one is on trial.
An update asks ``/v1/devices/<mac>?current=<image>``, downloads the diff (or the whole image
when no diff can be had) into a temporary file, resuming only when the server's ETag and
Content-Range prove the bytes continue the same file, applies the delta with librsync's
``rdiff patch`` into another temporary file, checks the sha256, fsyncs, renames, and only
then records the new image. Nothing is ever written under an image's real name, so a crash,
a bad diff or a full disk leaves the old image as it was.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from bootserverd_client.fsutil import fsync_dir, sha256_file, write_atomically

STATE_NAME = "bootserverd-images.json"
CHUNK = 1 << 20
EXIT_OK, EXIT_ERROR, EXIT_BAD_DATA, EXIT_NO_SPACE = 0, 1, 3, 4
EXIT_UNAVAILABLE = 5           # the server cannot give this file now (HTTP error, still building)


class UpdateError(Exception):
    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(message)
        self.code = code


@dataclass
class State:
    current: str | None = None
    current_sha256: str | None = None
    backup: str | None = None
    backup_sha256: str | None = None
    trial: bool = False          # current image not yet confirmed by --mark-good
    trial_boots: int = 0         # boots seen by --boot-check while on trial

    @classmethod
    def load(cls, directory: Path) -> "State":
        try:
            data = json.loads((directory / STATE_NAME).read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            raise UpdateError(f"cannot read {directory / STATE_NAME}: {exc}") from None
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def save(self, directory: Path) -> None:
        write_atomically(directory / STATE_NAME, (json.dumps(asdict(self), indent=1) + "\n").encode())


# -- files ----------------------------------------------------------------------------------
def free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def image_path(directory: Path, name: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise UpdateError(f"the server named an unsafe image {name!r}", EXIT_BAD_DATA)
    return directory / f"{name}.img"


# -- progress -------------------------------------------------------------------------------
class Progress:
    """'  42.0%  12.3/29.3 MB  85.1 MB/s  0:02 left' on stderr, at most 5 times a second."""

    def __init__(self, label: str, total: int, done: int, enabled: bool):
        self.label, self.total, self.start_done = label, total, done
        self.enabled = enabled
        self.began = self.last = time.monotonic()

    def update(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.2 and not final):
            return
        self.last = now
        rate = (done - self.start_done) / max(now - self.began, 1e-6)
        left = (self.total - done) / rate if rate > 0 else 0
        pct = 100.0 * done / self.total if self.total else 100.0
        sys.stderr.write(f"\r{self.label}: {pct:5.1f}%  {done / 1e6:.1f}/{self.total / 1e6:.1f} MB  "
                         f"{rate / 1e6:.1f} MB/s  {int(left) // 60}:{int(left) % 60:02d} left ")
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


# -- HTTP -----------------------------------------------------------------------------------
def get_json(url: str, timeout: float) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        body = exc.read(500).decode(errors="replace").strip()
        raise UpdateError(f"{url}: {exc.code} {body}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UpdateError(f"{url}: {exc}") from None


def download(url: str, part: Path, expected_etag: str | None, timeout: float, progress: bool,
             wait_limit: float) -> str:
    """Fetch ``url`` into ``part``, resuming an earlier attempt only if the server proves (ETag +
    Content-Range) that it continues the same file. Returns the response's ETag."""
    etag_file = part.with_name(part.name + ".etag")
    have = part.stat().st_size if part.exists() else 0
    old_etag = etag_file.read_text().strip() if etag_file.exists() and have else None
    if old_etag and expected_etag and old_etag != expected_etag:
        have, old_etag = 0, None                          # a different file now: start over
    deadline = time.monotonic() + wait_limit
    while True:
        headers = {"Range": f"bytes={have}-", "If-Range": old_etag} if old_etag else {}
        request = urllib.request.Request(url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            retry = exc.headers.get("Retry-After")
            if exc.code == 503 and retry and time.monotonic() < deadline:
                time.sleep(min(float(retry), max(deadline - time.monotonic(), 0.1), 30))
                continue
            if exc.code == 416 and old_etag:
                if exc.headers.get("Content-Range") == f"bytes */{have}":
                    return old_etag                       # the partial file was already complete
                have, old_etag = 0, None                  # stale partial file: start over
                continue
            body = exc.read(500).decode(errors="replace").strip()
            raise UpdateError(f"{url}: {exc.code} {body}", EXIT_UNAVAILABLE) from None
        except (urllib.error.URLError, OSError) as exc:
            raise UpdateError(f"{url}: {exc}") from None
        break
    with response:
        etag = response.headers.get("ETag")
        if response.status == 206:
            content_range = response.headers.get("Content-Range", "")
            start, total = _content_range(content_range)
            if etag != old_etag or start != have:
                _discard(part)                            # never append to bytes of another file
                raise UpdateError(f"{url}: resume refused: server sent {content_range!r} ETag {etag} "
                                  f"for a file of {have} bytes with ETag {old_etag}", EXIT_BAD_DATA)
            mode = "ab"
        elif response.status == 200:
            have, mode = 0, "wb"
            total = int(response.headers.get("Content-Length", "0")) or None
        else:
            raise UpdateError(f"{url}: unexpected status {response.status}")
        if expected_etag and etag and etag != expected_etag:
            raise UpdateError(f"{url}: ETag {etag} is not the expected {expected_etag}", EXIT_BAD_DATA)
        if etag:
            write_atomically(etag_file, etag.encode())
        bar = Progress(part.name.lstrip("."), total or 0, have, progress)
        done = have
        with open(part, mode) as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                bar.update(done)
            out.flush()
            os.fsync(out.fileno())
        bar.update(done, final=True)
        if total is not None and done != total:
            raise UpdateError(f"{url}: transfer ended at {done} of {total} bytes; run again to resume")
    return etag or ""


def check_etag_digest(path: Path, etag: str) -> None:
    """The server's ETags for images and diffs are their sha256: a mismatch is corruption."""
    tag = etag.strip('"')
    if len(tag) == 64 and all(c in "0123456789abcdef" for c in tag) and sha256_file(path) != tag:
        _discard(path)
        raise UpdateError(f"{path.name}: content does not match its ETag sha256; discarded", EXIT_BAD_DATA)


def _content_range(text: str) -> tuple[int, int | None]:
    """'bytes 100-199/1000' → (100, 1000)."""
    try:
        unit, _, rest = text.partition(" ")
        span, _, total = rest.partition("/")
        start = int(span.split("-")[0])
        return start, (int(total) if total != "*" else None)
    except ValueError:
        raise UpdateError(f"bad Content-Range {text!r}", EXIT_BAD_DATA) from None


# -- the commands ---------------------------------------------------------------------------
def default_mac() -> str:
    """The first non-loopback interface's MAC (laptops ask by MAC unless --device is given)."""
    for iface in sorted(Path("/sys/class/net").iterdir()):
        try:
            mac = (iface / "address").read_text().strip()
        except OSError:
            continue
        if iface.name != "lo" and mac and mac != "00:00:00:00:00:00":
            return mac
    raise UpdateError("no network interface with a MAC address; pass --device")


def update(args, directory: Path, state: State) -> int:
    device = args.device or default_mac()
    query = urllib.parse.urlencode({"current": state.current}) if state.current else ""
    info = get_json(f"{args.server.rstrip('/')}/v1/devices/{urllib.parse.quote(device)}"
                    + (f"?{query}" if query else ""), args.timeout)
    name, sha, size = info["image"], info["sha256"], int(info["size"])
    target = image_path(directory, name)
    if name == state.current and state.current_sha256 == sha and target.exists():
        print(f"up to date: {name}")
        return EXIT_OK
    if state.trial:
        raise UpdateError(f"{state.current} is on trial: boot it and run --mark-good (or --rollback) first")
    diff = info.get("diff") if state.current and not args.full else None
    source = image_path(directory, state.current) if diff else None
    if diff and (diff.get("from") != state.current or not source.exists()):
        diff = None
    new_tmp = directory / f".{name}.img.new"
    part = directory / f".{name}.img.part"
    delta = directory / f".{state.current}--{name}.rdiff.part"
    # only the temporaries this path overwrites count as free: a stale full-download .part
    # stays on disk while a diff is patched
    check_space(directory, name, size + (size if diff else 0) + int(args.reserve * (1 << 20)),
                [new_tmp, delta] if diff else [new_tmp, part])
    cleanup: list[Path] = []
    try:
        if diff:
            try:
                via_diff(urllib.parse.urljoin(args.server, diff["url"]), source, delta, new_tmp, args)
                cleanup = [delta]
            except UpdateError as exc:
                if exc.code != EXIT_UNAVAILABLE:
                    raise
                print(f"no diff to be had ({exc}); downloading the whole image", file=sys.stderr)
                _discard(delta)
                diff = None
        if not diff:
            print(f"downloading {name} ({size / 1e6:.1f} MB)")
            download(urllib.parse.urljoin(args.server, info["url"]), part, f'"{sha}"', args.timeout,
                     not args.quiet, args.wait)
            os.replace(part, new_tmp)
        got = sha256_file(new_tmp)
        if got != sha:
            _discard(new_tmp, *cleanup)
            raise UpdateError(f"{'diff' if diff else 'download'} rejected: sha256 {got[:16]}… is not "
                              f"{sha[:16]}…; {state.current or 'the old image'} is unchanged", EXIT_BAD_DATA)
        with open(new_tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(new_tmp, target)
        fsync_dir(directory)
    except OSError as exc:
        _discard(new_tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            # the partial files hold the space that ran out: give it back
            _discard(part, delta)
            raise UpdateError(f"disk full in {directory} while writing: {exc.strerror}; nothing was "
                              f"changed, temporary files removed", EXIT_NO_SPACE) from None
        raise UpdateError(f"{directory}: {exc}") from None
    _discard(*cleanup)
    for stale in directory.glob(f".{name}.img.part*"):
        stale.unlink(missing_ok=True)
    retired = state.backup if state.backup not in (state.current, name) else None
    new_state = State(current=name, current_sha256=sha, backup=state.current, backup_sha256=state.current_sha256,
                      trial=state.current is not None, trial_boots=0)
    if state.current == name:              # re-download of the same name: no A/B
        new_state.backup, new_state.backup_sha256 = state.backup, state.backup_sha256
    new_state.save(directory)
    if retired:
        image_path(directory, retired).unlink(missing_ok=True)
    print(f"{name} installed" + (f"; {state.current} kept as backup; on trial until --mark-good"
                                 if new_state.trial else ""))
    return EXIT_OK


def check_space(directory: Path, name: str, need: int, reused: list[Path] = ()) -> None:
    """Refuse before writing anything; the temporaries in ``reused`` (resumed or overwritten
    by this update) count as free."""
    leftovers = sum(p.stat().st_size for p in reused if p.is_file())
    have = free_bytes(directory) + leftovers
    if have < need:
        raise UpdateError(f"not enough space in {directory}: {name} needs {need >> 20} MiB, "
                          f"{have >> 20} MiB free; nothing was changed", EXIT_NO_SPACE)


def via_diff(url: str, source: Path, delta: Path, new_tmp: Path, args) -> None:
    """Download the delta (checked against its ETag digest) and patch ``source`` into ``new_tmp``."""
    print(f"updating {source.stem} → {new_tmp.name[1:-len('.img.new')]} with a diff")
    etag = download(url, delta, None, args.timeout, not args.quiet, args.wait)
    check_etag_digest(delta, etag)
    new_tmp.unlink(missing_ok=True)
    patch = subprocess.run(["rdiff", "patch", str(source), str(delta), str(new_tmp)], capture_output=True, text=True)
    if patch.returncode != 0:
        _discard(delta, new_tmp)
        if "No space" in patch.stderr:
            raise UpdateError(f"disk full while patching into {new_tmp.parent}; nothing was changed", EXIT_NO_SPACE)
        raise UpdateError(f"diff rejected: rdiff patch failed ({patch.stderr.strip()[-200:]}); "
                          f"{source.stem} is unchanged (--full downloads the whole image)", EXIT_BAD_DATA)


def _discard(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".etag").unlink(missing_ok=True)


def rollback(directory: Path, state: State, why: str) -> int:
    if not state.backup or not image_path(directory, state.backup).exists():
        raise UpdateError("no backup image to roll back to")
    new = State(current=state.backup, current_sha256=state.backup_sha256, backup=state.current,
                backup_sha256=state.current_sha256, trial=False, trial_boots=0)
    new.save(directory)
    print(f"rolled back to {new.current} ({why}); {new.backup} kept as backup")
    return EXIT_OK


def boot_check(directory: Path, state: State) -> int:
    """Run once per boot, early. A trial image gets one boot to be marked good."""
    if not state.trial:
        return EXIT_OK
    if state.trial_boots >= 1:
        return rollback(directory, state, f"{state.current} was not marked good")
    state.trial_boots += 1
    state.save(directory)
    print(f"{state.current} is on trial: run --mark-good once the system works")
    return EXIT_OK


def mark_good(directory: Path, state: State) -> int:
    if state.trial:
        state.trial, state.trial_boots = False, 0
        state.save(directory)
    print(f"{state.current} marked good")
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bootserverd-image-update", description=__doc__.split("\n\n")[0])
    p.add_argument("--server", help="boot server base URL, e.g. http://bootserver:8080")
    p.add_argument("--dir", type=Path, default=Path("/images"), help="image directory (default /images)")
    p.add_argument("--device", help="MAC or hostname to ask for (default: this machine's MAC)")
    p.add_argument("--full", action="store_true", help="download the whole image, not a diff")
    p.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    p.add_argument("--wait", type=float, default=1800.0, help="how long to wait for a diff being built")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--reserve", type=float, default=64.0, help="MiB to leave free (default 64)")
    group = p.add_mutually_exclusive_group()
    for flag, text in (("--rollback", "swap back to the backup image"),
                       ("--mark-good", "confirm the image on trial"),
                       ("--boot-check", "at boot: roll back a trial image that was not confirmed"),
                       ("--status", "print the state")):
        group.add_argument(flag, action="store_true", help=text)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    directory = args.dir
    try:
        if not directory.is_dir():
            raise UpdateError(f"image directory {directory} does not exist")
        state = State.load(directory)
        if args.status:
            print(json.dumps(asdict(state), indent=1))
            return EXIT_OK
        if args.rollback:
            return rollback(directory, state, "asked for")
        if args.mark_good:
            return mark_good(directory, state)
        if args.boot_check:
            return boot_check(directory, state)
        if not args.server:
            raise UpdateError("--server is required to update")
        return update(args, directory, state)
    except UpdateError as exc:
        print(f"bootserverd-image-update: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("bootserverd-image-update: interrupted; run again to resume", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
