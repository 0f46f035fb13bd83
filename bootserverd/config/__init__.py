"""The config file: the YAML loader and checker (schema) and the settings dataclasses.
Imports only the standard library and PyYAML."""
