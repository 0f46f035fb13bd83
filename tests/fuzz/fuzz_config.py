"""The config loader and the YAML inventory (bootserverd.config.settings, .schema, .inventory).

Any file content: load() returns a Config or raises ConfigError (whose lines each name
the file); parse_inventory returns a InventoryRecords or raises its SchemaError. Nothing else.
The input is mutated YAML text: the seeds are real configs, so the fuzzer works on
structure (keys, types, indentation), not only on bytes.
"""

from __future__ import annotations

import atexit
import dataclasses
import math
import shutil
import tempfile
from pathlib import Path

from tests.fuzz import harness

with harness.instrumented("bootserverd.config.settings", "bootserverd.config.schema", "bootserverd.inventory.yaml_source",
                          "bootserverd.model"):
    from bootserverd.config import settings as configmod
    from bootserverd.inventory.yaml_source import parse_inventory
    from bootserverd.config.schema import SchemaError

SCRATCH = Path(tempfile.mkdtemp(prefix="bootserverd-fuzz-config-"))
atexit.register(shutil.rmtree, SCRATCH, True)
for name in ("images", "tftp", "state"):
    (SCRATCH / name).mkdir()
(SCRATCH / "inventory.yaml").write_text("devices: []\n")
PATH = SCRATCH / "bootserverd.yaml"


def one_input(data: bytes) -> None:
    if not data:
        return
    which, text = data[0], data[1:]
    PATH.write_bytes(text)
    if which & 1:
        try:
            directory = parse_inventory(PATH)
        except SchemaError as exc:
            assert exc.problems and all(str(PATH) in str(p) for p in exc.problems), exc
            return
        macs = [d.mac for d in directory.devices]
        assert len(macs) == len(set(macs)), macs
        return
    try:
        config = configmod.load(PATH)
    except configmod.ConfigError as exc:
        assert exc.problems, "a ConfigError without a problem"
        assert all(str(PATH) in str(p) for p in exc.problems), exc
        return
    assert isinstance(config, configmod.Config)
    assert config.path == PATH.resolve()
    _check_numbers(config)


def _check_numbers(node) -> None:
    """Every number that passed the min/max rules is a real number (NaN passes any < or >)."""
    for field in dataclasses.fields(node):
        value = getattr(node, field.name)
        if isinstance(value, float):
            assert math.isfinite(value), (field.name, value)
        elif dataclasses.is_dataclass(value):
            _check_numbers(value)
        elif isinstance(value, tuple):
            for item in value:
                if dataclasses.is_dataclass(item):
                    _check_numbers(item)
