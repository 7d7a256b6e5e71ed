"""Registry: lookup in the data dir and cache, checksums, downloads, and what offline users read."""

from __future__ import annotations

import hashlib
import io
import lzma
import re
import zipfile
from pathlib import Path

import pytest

from hlrm.data import registry
from hlrm.data.registry import (
    DatasetSpec,
    FileSpec,
    Source,
    get_dataset,
    list_datasets,
    resolve_files,
    verify_file,
)
from hlrm.errors import ConfigError, DataError

RATINGS = b"1\t10\t5\t100\n2\t10\t3\t200\n"
SHA = hashlib.sha256(RATINGS).hexdigest()


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty data dir and cache per test, a fresh in-process memo, and no network."""
    monkeypatch.setenv("HLRM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HLRM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(registry, "_VERIFIED", set())

    def no_network(url: str, destination: Path) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(registry, "fetch_url", no_network)


def toy(monkeypatch: pytest.MonkeyPatch, **changes: object) -> DatasetSpec:
    fields: dict = {
        "name": "toy",
        "description": "a toy",
        "directory": "toy",
        "format": "movielens",
        "interactions": 2,
        "licence": "free",
        "citation": "none",
        "files": (FileSpec("u.data", "ratings", SHA),),
    }
    fields.update(changes)
    spec = DatasetSpec(**fields)
    monkeypatch.setitem(registry._REGISTRY, spec.name, spec)
    return spec


def put(root: Path, name: str, data: bytes) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lzma.compress(data) if name.endswith(".xz") else data)
    return path


def test_data_dir_file_is_found_and_verified(tmp_path: Path, monkeypatch) -> None:
    spec = toy(monkeypatch)
    path = put(tmp_path / "data", "toy/u.data.xz", RATINGS)  # checksum of the uncompressed bytes
    assert resolve_files(spec) == {"ratings": path}


def test_cache_is_the_fallback_location(tmp_path: Path, monkeypatch) -> None:
    spec = toy(monkeypatch)
    path = put(tmp_path / "cache", "toy/u.data", RATINGS)
    assert resolve_files(spec)["ratings"] == path


def test_checksum_mismatch_names_file_expected_and_actual(tmp_path: Path, monkeypatch) -> None:
    spec = toy(monkeypatch)
    bad = RATINGS.replace(b"5", b"4")
    path = put(tmp_path / "data", "toy/u.data", bad)
    with pytest.raises(DataError) as info:
        resolve_files(spec)
    message = str(info.value)
    assert str(path) in message and SHA in message
    assert hashlib.sha256(bad).hexdigest() in message


def test_line_count_is_checked_when_no_checksum_is_known(tmp_path: Path) -> None:
    path = put(tmp_path, "r.dat", b"a\nb\nc")
    verify_file(path, lines=3)
    with pytest.raises(DataError, match="has 3 lines, expected 4"):
        verify_file(put(tmp_path, "s.dat", b"a\nb\nc\n"), lines=4)


def test_corrupt_compressed_file_is_a_data_error(tmp_path: Path) -> None:
    path = put(tmp_path, "u.data.xz", b"")
    path.write_bytes(b"not xz")
    with pytest.raises(DataError, match="cannot read"):
        verify_file(path, sha256=SHA)


def test_verification_is_remembered_across_processes(tmp_path: Path, monkeypatch) -> None:
    path = put(tmp_path / "data", "toy/u.data", RATINGS)
    calls = []
    digest = registry.file_digest

    def counting(p: Path) -> tuple[str, int]:
        calls.append(p)
        return digest(p)

    monkeypatch.setattr(registry, "file_digest", counting)
    verify_file(path, sha256=SHA)
    verify_file(path, sha256=SHA)
    monkeypatch.setattr(registry, "_VERIFIED", set())  # a new process: only the disk memo is left
    verify_file(path, sha256=SHA)
    assert len(calls) == 1
    path.write_bytes(RATINGS + b"3\t10\t1\t300\n")  # a changed file is checked again
    with pytest.raises(DataError, match="checksum mismatch"):
        verify_file(path, sha256=SHA)
    assert len(calls) == 2


def test_offline_message_says_what_to_download_and_where(tmp_path: Path, monkeypatch) -> None:
    url = "https://example.org/toy.zip"
    spec = toy(monkeypatch, sources=(Source(url, "0" * 64, (("u.data", "toy/u.data"),)),))
    with pytest.raises(DataError) as info:
        resolve_files(spec)
    message = str(info.value)
    assert "network unreachable" in message
    assert url in message and "toy/u.data" in message
    assert str(tmp_path / "cache" / "toy" / "u.data") in message
    assert "HLRM_DATA_DIR" in message


def test_dataset_without_source_says_where_to_get_it(tmp_path: Path, monkeypatch) -> None:
    spec = toy(monkeypatch, url="https://example.org/toy")
    with pytest.raises(DataError, match=r"no download URL.*u\.data from https://example\.org/toy"):
        resolve_files(spec)


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_download_archive_verified_and_unpacked(tmp_path: Path, monkeypatch) -> None:
    archive = zip_bytes({"toy/u.data": RATINGS, "toy/README": b"hi"})
    url = "https://example.org/toy.zip"
    source = Source(url, hashlib.sha256(archive).hexdigest(), (("u.data", "toy/u.data"),))
    spec = toy(monkeypatch, sources=(source,))
    fetched = []

    def fake_fetch(got: str, destination: Path) -> None:
        fetched.append(got)
        destination.write_bytes(archive)

    monkeypatch.setattr(registry, "fetch_url", fake_fetch)
    path = resolve_files(spec)["ratings"]
    assert path == tmp_path / "cache" / "toy" / "u.data"
    assert path.read_bytes() == RATINGS
    assert sorted(p.name for p in path.parent.iterdir()) == ["u.data"]  # no leftovers
    resolve_files(spec)
    assert fetched == [url]


def test_download_with_wrong_checksum_is_rejected(tmp_path: Path, monkeypatch) -> None:
    url = "https://example.org/u.data"
    spec = toy(monkeypatch, sources=(Source(url, SHA),))
    monkeypatch.setattr(registry, "fetch_url", lambda u, d: d.write_bytes(b"tampered"))
    with pytest.raises(DataError, match=f"checksum mismatch for the download {url}"):
        resolve_files(spec)
    assert not (tmp_path / "cache" / "toy" / "u.data").exists()
    monkeypatch.setattr(registry, "fetch_url", lambda u, d: d.write_bytes(RATINGS))
    assert resolve_files(spec)["ratings"].read_bytes() == RATINGS


def test_alternatives_and_optional_titles(tmp_path: Path, monkeypatch) -> None:
    spec = toy(
        monkeypatch,
        files=(
            FileSpec("ratings.dat", "ratings", lines=2),
            FileSpec("u.data", "ratings", SHA),
            FileSpec("u.item", "titles"),
        ),
    )
    put(tmp_path / "data", "toy/u.data", RATINGS)
    assert set(resolve_files(spec)) == {"ratings"}
    original = put(tmp_path / "cache", "toy/ratings.dat", b"1::2::3::4\n5::6::7::8\n")
    titles = put(tmp_path / "data", "toy/u.item", b"10|A film|\n")
    assert resolve_files(spec) == {"ratings": original, "titles": titles}


def test_list_datasets_and_lookup(monkeypatch) -> None:
    rows = {row["name"]: row for row in list_datasets()}
    assert {"ml-100k", "ml-1m", "gowalla", "citeulike-t", "lastfm-2k", "synthetic"} <= set(rows)
    assert {"yelp-diffnet", "flickr-diffnet", "ml-20m", "ml-latest-small"} <= set(rows)
    assert rows["synthetic"]["available"] is True
    assert rows["ml-100k"]["available"] is False  # the data dir of this test is empty
    assert rows["ml-100k"]["interactions"] == 100_000
    assert "no redistribution" in rows["ml-100k"]["licence"]
    with pytest.raises(ConfigError, match="unknown dataset 'ml-2m'.*ml-100k"):
        get_dataset("ml-2m")


def test_registry_entries_are_consistent() -> None:
    for name in registry.dataset_names():
        spec = get_dataset(name)
        for file in spec.files:
            assert file.role in registry.ROLES
            assert file.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", file.sha256)
        for source in spec.sources:
            assert source.url.startswith("https://")
            assert source.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", source.sha256)
        if spec.split == "given":
            assert {"train", "test"} <= set(spec.roles())
        assert spec.generate is not None or spec.roles()


@pytest.mark.dataset
def test_checksums_agree_with_the_shared_sha256sums(data_dir: Path, monkeypatch) -> None:
    sums = dict(
        reversed(line.split()) for line in (data_dir / "SHA256SUMS").read_text().splitlines()
    )
    checked = 0
    for name in registry.dataset_names():
        spec = get_dataset(name)
        for file in spec.files:
            key = f"{spec.directory}/{file.name}"
            if key in sums:
                assert file.sha256 == sums[key], key
                checked += 1
    assert checked >= 15


@pytest.mark.dataset
def test_every_local_dataset_resolves(data_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("HLRM_DATA_DIR", str(data_dir))
    available = [row["name"] for row in list_datasets() if row["available"]]
    assert {"ml-100k", "ml-1m", "gowalla", "citeulike-t", "lastfm-2k"} <= set(available)
    assert {"yelp-diffnet", "flickr-diffnet"} <= set(available)
    for name in available:
        spec = get_dataset(name)
        if spec.generate is None:
            assert set(spec.roles()) <= set(resolve_files(spec, download=False))
