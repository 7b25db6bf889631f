"""Atomic files and folders: complete or absent, never over existing data without overwrite, plainly shared modes."""

import os
import stat

import pytest

from ramit_hf.atomic import atomic_folder, write_bytes_atomic, write_file_atomic, write_text_atomic


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_files_refuse_to_overwrite_and_replace_with_overwrite(tmp_path):
    path = write_text_atomic(tmp_path / "sub" / "a.json", "{}\n")  # parents are created
    with pytest.raises(FileExistsError, match="already exists"):
        write_bytes_atomic(path, b"new")
    assert path.read_text() == "{}\n"
    write_text_atomic(path, "caf\u00e9", overwrite=True)
    assert path.read_bytes() == "caf\u00e9".encode()
    # the mode a plainly created file gets, not tempfile's private 0600
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


def test_a_failing_file_writer_leaves_nothing(tmp_path):
    def crash(file):
        file.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_file_atomic(tmp_path / "a.bin", crash)
    assert list(tmp_path.iterdir()) == []


def test_folders_are_replaced_only_when_complete(tmp_path):
    folder = tmp_path / "model"
    with atomic_folder(folder) as staging:
        (staging / "weights").write_text("1")
        assert not folder.exists()  # nothing under the name until the block succeeds
    assert (folder / "weights").read_text() == "1"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~_umask()  # shared, not mkdtemp's private 0700

    with pytest.raises(FileExistsError, match="already exists and is not empty"), atomic_folder(folder):
        pytest.fail("the block must not run")
    with pytest.raises(RuntimeError, match="interrupted"), atomic_folder(folder, overwrite=True) as staging:
        (staging / "weights").write_text("2")
        raise RuntimeError("interrupted")
    assert (folder / "weights").read_text() == "1"  # a failed replacement keeps the old folder
    with atomic_folder(folder, overwrite=True) as staging:
        (staging / "weights").write_text("3")
    assert [p.name for p in folder.iterdir()] == ["weights"] and (folder / "weights").read_text() == "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging or old folders left behind


def test_a_write_that_fails_midway_names_the_destination_and_leaves_nothing(tmp_path):
    import errno

    def fills_the_disk(file):
        file.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=r"\[Errno 28\] No space left on device: '.*out.png'") as caught:
        write_file_atomic(tmp_path / "out.png", fills_the_disk)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []
