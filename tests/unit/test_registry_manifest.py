"""Sealed manifests: one flipped byte, an added or a missing file, or a forged manifest is refused."""
from __future__ import annotations

import pytest

from mlplat.errors import IntegrityError
from mlplat.services import manifest

KEY = b"k" * 64


@pytest.fixture
def model_dir(tmp_path):
    root = tmp_path / "model"
    (root / "sub").mkdir(parents=True)
    (root / "MLmodel").write_text("flavors: {}\n")
    (root / "model.pkl").write_bytes(bytes(range(256)) * 10)
    (root / "sub" / "extra.json").write_text("{}")
    return root


def test_untouched_files_verify(model_dir):
    doc = manifest.build(model_dir, model="m")
    manifest.verify(model_dir, doc, manifest.seal(doc, KEY), KEY, what="m v1")
    assert sorted(doc["files"]) == ["MLmodel", "model.pkl", "sub/extra.json"]


def test_one_flipped_byte_names_the_file(model_dir):
    doc = manifest.build(model_dir)
    sealed = manifest.seal(doc, KEY)
    data = bytearray((model_dir / "model.pkl").read_bytes())
    data[100] ^= 1
    (model_dir / "model.pkl").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="'model.pkl'.*modified"):
        manifest.verify(model_dir, doc, sealed, KEY, what="m v1")


def test_added_and_missing_files_are_refused(model_dir):
    doc = manifest.build(model_dir)
    sealed = manifest.seal(doc, KEY)
    (model_dir / "evil.pkl").write_bytes(b"x")
    with pytest.raises(IntegrityError, match="'evil.pkl'.*added"):
        manifest.verify(model_dir, doc, sealed, KEY, what="m v1")
    (model_dir / "evil.pkl").unlink()
    (model_dir / "sub" / "extra.json").unlink()
    with pytest.raises(IntegrityError, match="'sub/extra.json'.*missing"):
        manifest.verify(model_dir, doc, sealed, KEY, what="m v1")


def test_forged_manifest_fails_the_seal(model_dir):
    doc = manifest.build(model_dir)
    sealed = manifest.seal(doc, KEY)
    (model_dir / "model.pkl").write_bytes(b"replaced")
    forged = manifest.build(model_dir)  # an attacker rewrites the hashes but has no key
    with pytest.raises(IntegrityError, match="seal"):
        manifest.verify(model_dir, forged, sealed, KEY, what="m v1")
    assert manifest.digest(forged) != manifest.digest(doc)


def test_symlinks_are_refused(model_dir, tmp_path):
    (tmp_path / "outside").write_text("secret")
    (model_dir / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(IntegrityError, match="symbolic"):
        manifest.build(model_dir)
