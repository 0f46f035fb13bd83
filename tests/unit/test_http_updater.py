"""bootserverd_client.updater pieces without a server: progress line, Content-Range, state, trial."""
import json

import pytest

from bootserverd_client.updater import (EXIT_OK, Progress, State, UpdateError, _content_range, boot_check, image_path,
                                 mark_good, rollback)


def test_progress_line(capsys):
    bar = Progress("new.img", total=100_000_000, done=0, enabled=True)
    bar.began -= 2.0                                 # two seconds in
    bar.update(50_000_000, final=True)
    line = capsys.readouterr().err
    assert "50.0%" in line and "50.0/100.0 MB" in line and "25.0 MB/s" in line and "0:02 left" in line
    Progress("x", 10, 0, enabled=False).update(5, final=True)
    assert capsys.readouterr().err == ""


def test_content_range():
    assert _content_range("bytes 100-199/1000") == (100, 1000)
    assert _content_range("bytes 0-0/*") == (0, None)
    with pytest.raises(UpdateError):
        _content_range("garbage")


def test_unsafe_names_from_the_server_are_refused(tmp_path):
    for bad in ("../etc/passwd", ".hidden", "", "a/b"):
        with pytest.raises(UpdateError):
            image_path(tmp_path, bad)


def _laptop(tmp_path, trial=True, boots=0):
    for name in ("old", "new"):
        (tmp_path / f"{name}.img").write_bytes(name.encode())
    State(current="new", current_sha256="n", backup="old", backup_sha256="o", trial=trial,
          trial_boots=boots).save(tmp_path)
    return tmp_path


def test_trial_gets_one_boot(tmp_path):
    laptop = _laptop(tmp_path)
    assert boot_check(laptop, State.load(laptop)) == EXIT_OK
    assert State.load(laptop).trial_boots == 1 and State.load(laptop).current == "new"
    assert boot_check(laptop, State.load(laptop)) == EXIT_OK          # second boot, never marked good
    s = State.load(laptop)
    assert (s.current, s.backup, s.trial, s.current_sha256) == ("old", "new", False, "o")


def test_mark_good_ends_the_trial(tmp_path):
    laptop = _laptop(tmp_path)
    boot_check(laptop, State.load(laptop))
    mark_good(laptop, State.load(laptop))
    boot_check(laptop, State.load(laptop))
    assert State.load(laptop).current == "new" and not State.load(laptop).trial


def test_rollback_needs_a_backup_file(tmp_path):
    laptop = _laptop(tmp_path, trial=False)
    (laptop / "old.img").unlink()
    with pytest.raises(UpdateError):
        rollback(laptop, State.load(laptop), "test")
    assert json.loads((laptop / "bootserverd-images.json").read_text())["current"] == "new"
    assert not [p for p in laptop.iterdir() if p.name.startswith(".")]
