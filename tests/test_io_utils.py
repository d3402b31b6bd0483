"""Atomic writes."""

import os

import pytest

from pss_tf.io_utils import atomic_write, atomic_write_json, read_json


def test_atomic_writes_leave_readable_files(tmp_path):
    """Files written atomically get the permissions of any new file (not mkstemp's 0600)."""
    mask = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(mask)
    assert os.stat(tmp_path / "a.json").st_mode & 0o777 == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"step": 1})

    def fail(f):
        f.write("{half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert read_json(path) == {"step": 1}
    assert os.listdir(tmp_path) == ["state.json"]
