"""bootserverd: one process that boots a school's machines (DHCP, TFTP, NBD, HTTP).

Sub-packages by concern: config, model, inventory, boot, images, ops, tools; app.py composes
them with services/ and ldapsync/, cli.py parses the command line. Nothing imports app but cli.
"""

__version__ = "0.1.0"
