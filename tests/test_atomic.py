import pytest

from recon.atomic import staged_folder
from recon.errors import InputError


def test_staged_folder_replaces_target_only_on_success(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_folder(target, overwrite=True) as staging:
            (staging / "new.txt").write_text("new")
            raise RuntimeError("interrupted half way")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # staging removed
    with staged_folder(target, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the old copy is gone too


def test_staged_folder_refuses_non_empty_target_and_files(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    with pytest.raises(InputError, match="--overwrite"):
        with staged_folder(tmp_path / "out"):
            pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        with staged_folder(tmp_path / "file", overwrite=True):
            pass
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep"
    with staged_folder(tmp_path / "fresh" / "deep") as staging:
        (staging / "a").write_text("a")
    assert (tmp_path / "fresh" / "deep" / "a").read_text() == "a"
