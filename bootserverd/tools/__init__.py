"""Operator tools run from the CLI: selftest and populate-tftp.
Imports config and the protocol codecs; never app or services."""
