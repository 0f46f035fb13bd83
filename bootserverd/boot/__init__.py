"""Boot plans: the resolver, rendered loader configs, the served boot files and the boot
report. Imports model, config and images; never app, services or ldapsync."""
