"""The boot resolver: who boots what, and the configs that say it.

``resolve`` answers DHCP (first-stage loader, next-server, hostname, reserved address);
``render`` makes the per-device pxelinux / iPXE / GRUB config that TFTP and HTTP serve.
Both read one model snapshot per call, so a change in the directory is live at once.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from twisted.logger import Logger

from bootserverd.config.settings import Config
from bootserverd.model.objects import Device
from bootserverd.model.snapshot import Inventory, Model
from bootserverd.images.squashfs import describe_versions

log = Logger(namespace="bootserverd.boot")
KERNEL_WARNINGS_MAX = 10000       # remembered (MAC, image, version) warnings; forgotten all at once past this


@dataclass(frozen=True)
class Firmware:
    name: str            # bios | efi32 | efi64 | arm64
    http_boot: bool = False
    ipxe: str = ""       # the iPXE build UEFI HTTP Boot gets when the configured loader is not iPXE


# DHCP option 93 (RFC 4578 + IANA "Processor Architecture Types"). Of the UEFI HTTP Boot
# types, those with a loader class here: 15, 16, 19; the others (17 EBC, 18 ARM32, 20 BIOS,
# 23/24 U-Boot, 26/28/30 RISC-V, 38/40 LoongArch) are answered as unsupported.
ARCHITECTURES: dict[int, Firmware] = {
    0: Firmware("bios"),
    6: Firmware("efi32"),
    7: Firmware("efi64"),
    9: Firmware("efi64"),
    11: Firmware("arm64"),
    15: Firmware("efi32", http_boot=True, ipxe="ipxe-i386.efi"),
    16: Firmware("efi64", http_boot=True, ipxe="ipxe.efi"),
    19: Firmware("arm64", http_boot=True, ipxe="ipxe-arm64.efi"),
}


@dataclass(frozen=True)
class BootPlan:
    bootfile: str               # option 67 / BOOTP file: a TFTP path or an http:// URL ("" = none)
    next_server: str
    hostname: str | None
    reserved_ip: str | None
    device: Device | None
    known: bool
    image: str | None
    error: str | None


@dataclass(frozen=True)
class MenuEntry:
    kind: str                   # linux | local | error
    label: str
    title: str
    image: str | None = None
    message: str = ""


_IPXE_LOADER = re.compile(r"ipxe|\.kk?pxe$|snp(only)?\.efi$|\.lkrn$", re.IGNORECASE)


def is_ipxe_loader(path: str) -> bool:
    """undionly.kpxe, ipxe.efi, snponly.efi...: a loader that is iPXE itself."""
    return bool(_IPXE_LOADER.search(path.rsplit("/", 1)[-1]))


def is_signed_chain(path: str) -> bool:
    """shimx64.efi, shimaa64.efi: the Secure Boot chain's first stage (shim, then GRUB)."""
    return path.rsplit("/", 1)[-1].lower().startswith("shim")


_UNSAFE = re.compile(r"[^A-Za-z0-9 .,:;()/_@+=-]")


def _safe(text: str) -> str:
    """Menu text goes into three config languages: keep it to characters none of them quote."""
    return _UNSAFE.sub("?", text)


_SCRIPT_META = re.compile(r"[|&;$`{}]")


def _kernel_words(text: str) -> list[str]:
    """Kernel arguments (directory, inventory, config) end up on one line of a pxelinux, iPXE
    or GRUB config: keep whitespace-separated words without control characters, and drop a
    word holding the scripts' separators or expansions (|| && ; $ ` {}), so that no value
    can add a command to a boot script."""
    words = ("".join(ch for ch in word if ch.isprintable()) for word in text.split())
    return [word for word in words if word and not _SCRIPT_META.search(word)]


def _kernel_pair(prefix: str, version: str | None) -> tuple[str, str]:
    """The kernel and initrd below ``prefix``, of ``version`` (None: the image's default)."""
    suffix = f"-{version}" if version else ""
    return f"{prefix}/vmlinuz{suffix}", f"{prefix}/initrd.img{suffix}"


class Templates:
    """``## section: NAME`` blocks of string.Template text, one file per config format."""

    def __init__(self, directory: Path):
        self.sections: dict[str, dict[str, string.Template]] = {}
        for fmt in ("pxelinux.cfg", "ipxe", "grub.cfg"):
            text = (directory / fmt).read_text(encoding="utf-8")
            parts: dict[str, list[str]] = {}
            current = None
            for line in text.splitlines(keepends=True):
                match = re.match(r"^## section: (\w+)\s*$", line)
                if match:
                    current = parts.setdefault(match[1], [])
                elif current is not None:
                    current.append(line)
            self.sections[fmt] = {name: string.Template("".join(lines)) for name, lines in parts.items()}

    def fill(self, fmt: str, section: str, **values) -> str:
        return self.sections[fmt][section].substitute(values)


def default_templates_dir() -> Path:
    for candidate in (Path(__file__).resolve().parents[2] / "etc" / "templates",
                      Path("/usr/share/bootserverd/templates")):
        if (candidate / "ipxe").is_file():
            return candidate
    raise FileNotFoundError("boot templates not found (etc/templates)")


class BootResolver:
    def __init__(self, config: Config, model: Model, templates: Templates | None = None,
                 on_problem: Callable[[str, str], None] | None = None):
        self.config = config
        self.model = model
        self.on_problem = on_problem      # (mac, problem): a device was sent an error menu (boot report)
        self.templates = templates or Templates(config.boot.templates or default_templates_dir())
        self._kernel_warned: set[tuple] = set()

    def reconfigure(self, config: Config) -> None:
        """SIGHUP: the new server address, ports, loaders and templates apply to the next answer."""
        if config.boot.templates != self.config.boot.templates:
            self.templates = Templates(config.boot.templates or default_templates_dir())
        self.config = config

    @property
    def address(self) -> str:
        return str(self.config.server.address)

    def http_base(self) -> str | None:
        http = self.config.http
        return f"http://{self.address}:{http.listen.port}" if http.enabled else None

    # -- DHCP --
    def resolve(self, mac: str | None, arch: int | None, ipxe: bool, client_ip: str | None = None) -> BootPlan:
        inventory = self.model.inventory
        device = inventory.device(mac) if mac else None
        known = device is not None
        plan = dict(next_server=self.address, hostname=device.hostname if device else None,
                    reserved_ip=device.ip if device else None, device=device, known=known,
                    image=inventory.image_for(device))
        if not known and self.config.boot.unknown_clients == "ignore":
            return BootPlan(bootfile="", error="unknown client", **plan)
        firmware = ARCHITECTURES.get(arch if arch is not None else 0)
        if firmware is None:
            return BootPlan(bootfile="", error=f"unsupported client architecture {arch}", **plan)
        loader = getattr(self.config.boot.loaders, firmware.name)
        # An iPXE client is already running code the firmware let through: the signed chain
        # (for firmware that refuses iPXE) would only step back to GRUB and TFTP kernels.
        if ipxe and (is_ipxe_loader(loader) or is_signed_chain(loader) or firmware.http_boot):
            script = f"ipxe/{mac.replace(':', '-')}.ipxe" if mac else "ipxe/default.ipxe"
            base = self.http_base()
            return BootPlan(bootfile=f"{base}/{script}" if base else script, error=None, **plan)
        if ipxe:
            # The site chose another loader (pxelinux.0, grubnetx64.efi): an iPXE ROM runs it
            # as any PXE ROM would; that loader does no DHCP of its own, so there is no loop.
            return BootPlan(bootfile=loader, error=None, **plan)
        if firmware.http_boot:
            base = self.http_base()
            if base is None:
                return BootPlan(bootfile="", error="HTTP boot needs http.enabled", **plan)
            # Of Debian's loaders only iPXE boots on from UEFI HTTP Boot (tests/e2e/test_http_boot.py):
            # GRUB 2.06 (grubnetx64, also behind shim) takes its prefix from the boot URL,
            # (http,server:port)/grub, has no http module and stops at grub> without a request
            # (a GRUB with http asks for /grub/grub.cfg at the HTTP root, not served);
            # syslinux.efi finds no root device. With Secure Boot on, the firmware refuses iPXE
            # ("Access Denied") and goes on to its next boot entry (PXE, where shim → GRUB
            # works), where shim over HTTP would wait at grub> for ever.
            first = loader if is_ipxe_loader(loader) else firmware.ipxe
            return BootPlan(bootfile=f"{base}/tftp/{first}", error=None, **plan)
        return BootPlan(bootfile=loader, error=None, **plan)

    # -- configs --
    def menu(self, mac: str | None) -> list[MenuEntry]:
        inventory = self.model.inventory
        device = inventory.device(mac) if mac else None
        if device is None:
            if self.config.boot.unknown_clients == "ignore":
                return [MenuEntry("error", "error", "Unknown device: not served here",
                                  message=f"device {mac or '?'} is not registered")]
            first = inventory.unregistered_image()
            names = sorted(inventory.images, key=lambda name: (name != first, name))
            entries = [MenuEntry("linux", f"image{i}", _safe(f"Boot {name}"), image=name)
                       for i, name in enumerate(names)]
            return entries + [MenuEntry("local", "local", "Boot from local disk")]
        problem = self._problem(inventory, device)
        if problem:
            return [MenuEntry("error", "error", _safe(f"Error: {problem}"), message=_safe(problem))]
        image = inventory.image_for(device)
        mode = inventory.boot_mode_for(device)
        linux = MenuEntry("linux", "netboot", _safe(f"Boot {image}"), image=image)
        local = MenuEntry("local", "local", "Boot from local disk")
        return {"netboot": [linux], "localboot": [local], "dualboot": [linux, local]}[mode]

    @staticmethod
    def _problem(inventory: Inventory, device: Device) -> str | None:
        if not device.enabled:
            return f"device {device.label()} is disabled"
        image = inventory.image_for(device)
        if image is None:
            return f"no image is assigned to {device.label()}"
        if image not in inventory.images:
            return f"image {image} is not published on this boot server"
        return None

    def cmdline(self, image: str, device: Device | None) -> str:
        inventory = self.model.inventory
        nbd = self.config.nbd.listen.port
        parts = [f"root=/dev/nbd0 nbdroot={self.address}:{nbd}/{image} ip=dhcp ro"]
        device_type = inventory.type_for(device)
        if device_type:
            parts.append(f"bootserverd.type={device_type}")
        if device and device.hostname:
            parts.append(f"systemd.hostname={device.hostname}")
        parts += _kernel_words(self.config.boot.kernel_args) + _kernel_words(inventory.kernel_args_for(device))
        return " ".join(p for p in parts if p)

    def render(self, fmt: str, mac: str | None, client: str) -> bytes:
        """fmt: "pxelinux.cfg", "ipxe" or "grub.cfg"; client names the requester in a comment."""
        entries = self.menu(mac)
        device = self.model.inventory.device(mac) if mac else None
        has_error = any(e.kind == "error" for e in entries)
        if has_error and mac and self.on_problem is not None:
            self.on_problem(mac, next(e.message or e.title for e in entries if e.kind == "error"))
        timeout = 0 if has_error else (self.config.boot.menu_timeout if len(entries) > 1 else 0)
        title = _safe(f"bootserverd {device.label() if device else (mac or client)}")
        fill = self.templates.fill
        header = dict(client=_safe(client), title=title, default_label=entries[0].label, default_index=0)
        interactive = len(entries) > 1 or has_error
        if fmt == "pxelinux.cfg":
            out = [fill(fmt, "header", prompt=int(interactive), timeout_ds=timeout * 10,
                        ui="UI menu.c32" if interactive else "", **header)]
        elif fmt == "ipxe":
            out = [fill(fmt, "header", **header)]
            if interactive:
                out.append(fill(fmt, "menu", **header))
                out += [fill(fmt, "item", label=e.label, title=e.title) for e in entries]
                out.append(fill(fmt, "choose", timeout_ms=timeout * 1000, **header))
            else:
                out.append(fill(fmt, "direct", **header))
        else:
            out = [fill(fmt, "header", timeout_s=-1 if has_error else timeout, **header)]
            if mac is None and "identify" in self.templates.sections[fmt]:    # (a site's own templates may lack it)
                out.append(fill(fmt, "identify"))
        for entry in entries:
            values = dict(label=entry.label, title=entry.title, message=entry.message, image=entry.image or "")
            section = entry.kind
            if entry.kind == "linux":
                version = self.kernel_version(entry.image, device, mac)
                kernel, initrd = _kernel_pair(self._kernel_prefix(fmt, entry.image), version)
                values.update(kernel=kernel, initrd=initrd, cmdline=self.cmdline(entry.image, device))
                http = self._grub_http_prefix(entry.image) if fmt == "grub.cfg" else None
                if http and "linux_http" in self.templates.sections[fmt]:
                    section = "linux_http"
                    values.update(zip(("kernel_http", "initrd_http"), _kernel_pair(http, version)))
            out.append(fill(fmt, section, **values))
        return "".join(out).encode()

    def _kernel_prefix(self, fmt: str, image: str) -> str:
        """Where the loader reading config ``fmt`` fetches kernel and initrd: over HTTP where
        it can (iPXE; lpxelinux.0 as the BIOS loader), else by TFTP path."""
        base = self.http_base()
        if fmt == "ipxe":
            return f"{base}/boot/{image}" if base else f"tftp://{self.address}/images/{image}"
        if fmt == "grub.cfg":
            return f"/images/{image}"
        if base and self.pxelinux_speaks_http():
            return f"{base}/boot/{image}"
        return f"images/{image}"

    def _grub_http_prefix(self, image: str) -> str | None:
        """GRUB's own device syntax for our HTTP service, tried before TFTP; None where GRUB
        reads TFTP only (boot.grub_http false: Debian's signed GRUB, or HTTP off)."""
        if not self.config.boot.grub_http or self.http_base() is None:
            return None
        return f"(http,{self.address}:{self.config.http.listen.port})/boot/{image}"

    def pxelinux_speaks_http(self) -> bool:
        """lpxelinux.0 (not pxelinux.0) fetches http:// URLs; both read the same pxelinux.cfg,
        so the configured BIOS loader decides."""
        return self.config.boot.loaders.bios.rsplit("/", 1)[-1] == "lpxelinux.0"

    def kernel_version(self, image_name: str, device: Device | None, mac: str | None = None) -> str | None:
        """The (inherited) kernel version to boot when ``image_name`` has it; None = its default.
        A version the image lacks is warned about once per device, image and version."""
        inventory = self.model.inventory
        wanted = inventory.kernel_version_for(device)
        if not wanted:
            return None
        image = inventory.images.get(image_name)
        kernels = getattr(image, "kernels", None) or {}
        if wanted in kernels:
            return wanted
        mac = device.mac if device else mac
        key = (mac, image_name, wanted)
        if key not in self._kernel_warned:
            if len(self._kernel_warned) >= KERNEL_WARNINGS_MAX:
                self._kernel_warned.clear()
            self._kernel_warned.add(key)
            log.warn("{device} wants kernel {wanted} but image {image} has {has}: booting its default kernel",
                     device=device.label() if device else (mac or "unknown client"), wanted=wanted,
                     image=image_name, has=describe_versions(kernels, getattr(image, "default_kernel_version", None)))
        return None
