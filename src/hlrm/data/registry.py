"""Named datasets: where their files live, how to check them, how to get them, how to cite them.

A dataset's files are looked up as ``<root>/<directory>/<file>`` (or ``<file>.xz`` / ``.gz``)
under two roots, in order:

1. ``$HLRM_DATA_DIR`` when set: a directory laid out like the project's shared data folder;
2. the cache, ``$HLRM_CACHE_DIR`` (default ``~/.cache/hlrm``), where downloads go.

Every file with a known SHA-256 (of its uncompressed content) is verified before use; a file
without one is checked by its line count where that is published. Verification is remembered per
(path, size, mtime) in-process and in ``<cache>/verified.json``, so only the first load of a file
pays for hashing. A missing dataset with a public source is downloaded into the cache (to a
temporary name, renamed once verified); when that fails, the error names the URL to fetch and
the path to put the file at.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import logging
import lzma
import os
import shutil
import tempfile
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from hlrm.data.readers import COMPRESSED_SUFFIXES
from hlrm.data.synthetic import DEFAULT_INTERACTIONS, make_synthetic
from hlrm.errors import ConfigError, DataError
from hlrm.fileio import atomic_path, write_json

logger = logging.getLogger(__name__)

ENV_DATA_DIR = "HLRM_DATA_DIR"
ENV_CACHE_DIR = "HLRM_CACHE_DIR"
#: File roles; every role but ``titles`` is required to load a dataset.
ROLES = ("ratings", "train", "valid", "test", "titles")


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset.

    Several files may share a role: they are alternatives, tried in order (ML-1M accepts the
    original ``ratings.dat`` and the timestamp-free reconstruction). ``sha256`` is of the
    uncompressed content; ``lines`` (total, header included) is checked instead when no checksum
    is known; with neither, the file is used as found.
    """

    name: str
    role: str
    sha256: str | None = None
    lines: int | None = None


@dataclass(frozen=True)
class Source:
    """A public download: an archive (``members``: file name → path inside the zip) or, with no
    members, the file itself, named like the URL's last component. ``sha256`` is of the bytes
    downloaded; a verified archive vouches for the files unpacked from it."""

    url: str
    sha256: str | None = None
    members: tuple[tuple[str, str], ...] = ()

    def provides(self) -> list[str]:
        if self.members:
            return [name for name, _ in self.members]
        return [self.url.rsplit("/", 1)[-1]]


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset and its default preprocessing (the ``DataConfig`` fields left unset)."""

    name: str
    description: str
    directory: str
    format: str
    interactions: int  # as published (before any preprocessing)
    licence: str
    citation: str
    url: str | None = None  # the publisher's page
    files: tuple[FileSpec, ...] = ()
    sources: tuple[Source, ...] = ()
    min_rating: float | None = None
    user_core: int = 1
    item_core: int = 1
    split: str = "random"
    generate: Callable[[int], pd.DataFrame] | None = None  # seed → frame (generated datasets)

    def roles(self) -> list[str]:
        """Required roles, in :data:`ROLES` order."""
        present = {f.role for f in self.files}
        return [r for r in ROLES if r in present and r != "titles"]

    def candidates(self, role: str) -> list[FileSpec]:
        return [f for f in self.files if f.role == role]


_REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add (or replace) a named dataset."""
    _REGISTRY[spec.name] = spec
    return spec


def dataset_names() -> list[str]:
    return list(_REGISTRY)


def get_dataset(name: str) -> DatasetSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset {name!r}; known datasets: {', '.join(_REGISTRY)}"
        ) from None


# ---- locations -----------------------------------------------------------------------------------
def data_dir() -> Path | None:
    """``$HLRM_DATA_DIR`` when set (a read-only tree laid out like ``shared/data``)."""
    value = os.environ.get(ENV_DATA_DIR)
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """Where downloads and the verification memo go: ``$HLRM_CACHE_DIR`` or ``~/.cache/hlrm``."""
    value = os.environ.get(ENV_CACHE_DIR)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "hlrm"


def _roots() -> list[Path]:
    first = data_dir()
    return ([first] if first is not None else []) + [cache_dir()]


def find_file(spec: DatasetSpec, file: FileSpec) -> Path | None:
    """The first existing copy of ``file`` (plain, ``.xz`` or ``.gz``) under the roots."""
    for root in _roots():
        for suffix in ("", *COMPRESSED_SUFFIXES):
            path = root / spec.directory / (file.name + suffix)
            if path.is_file():
                return path
    return None


def _locate(spec: DatasetSpec) -> dict[str, tuple[FileSpec, Path]]:
    """Role → (file, path) for every role with an existing candidate (candidates in order)."""
    found: dict[str, tuple[FileSpec, Path]] = {}
    for file in spec.files:
        if file.role not in found:
            path = find_file(spec, file)
            if path is not None:
                found[file.role] = (file, path)
    return found


def is_available(spec: DatasetSpec) -> bool:
    """Whether every required file is present (without verifying it)."""
    if spec.generate is not None:
        return True
    return set(spec.roles()) <= set(_locate(spec))


def list_datasets() -> list[dict[str, object]]:
    """One row per dataset: name, published interaction count, licence, local availability."""
    return [
        {
            "name": spec.name,
            "interactions": spec.interactions,
            "licence": spec.licence,
            "available": is_available(spec),
            "description": spec.description,
        }
        for spec in _REGISTRY.values()
    ]


def resolve_files(spec: DatasetSpec, *, download: bool = True) -> dict[str, Path]:
    """Role → verified path for every required role (and ``titles`` when present).

    Missing required files are downloaded into the cache when the dataset has a source and
    ``download`` is true; otherwise, or when that fails, the DataError says what to fetch and
    where to put it.
    """
    found = _locate(spec)
    missing = [role for role in spec.roles() if role not in found]
    if missing:
        needed = {f.name for role in missing for f in spec.candidates(role)}
        if not download or not spec.sources:
            raise DataError(_missing_message(spec, needed, None))
        try:
            _download(spec, needed)
        except (OSError, http.client.HTTPException, zipfile.BadZipFile, KeyError) as exc:
            raise DataError(_missing_message(spec, needed, exc)) from None
        found = _locate(spec)
        missing = [role for role in spec.roles() if role not in found]
        if missing:
            raise DataError(_missing_message(spec, needed, None))
    for file, path in found.values():
        verify_file(path, sha256=file.sha256, lines=file.lines)
    return {role: path for role, (_, path) in found.items()}


def _missing_message(spec: DatasetSpec, needed: set[str], failure: Exception | None) -> str:
    target = cache_dir() / spec.directory
    where = f"or put the files in ${ENV_DATA_DIR}/{spec.directory}/, plain or as .xz/.gz"
    wanted = [s for s in spec.sources if needed & set(s.provides())]
    if not wanted:
        files = ", ".join(sorted(needed))
        origin = f" from {spec.url}" if spec.url else ""
        return (
            f"dataset {spec.name!r} is not available here and has no download URL: get "
            f"{files}{origin} and put them in {target}/, {where}"
        )
    steps = []
    for source in wanted:
        if source.members:
            unpack = ", ".join(f"{member} as {target / name}" for name, member in source.members)
            steps.append(f"download {source.url} and unpack {unpack}")
        else:
            steps.append(f"download {source.url} to {target / source.provides()[0]}")
    reason = f" could not be downloaded ({failure})" if failure else " is not available here"
    return f"dataset {spec.name!r}{reason}: {'; '.join(steps)}; {where}"


# ---- verification --------------------------------------------------------------------------------
_VERIFIED: set[tuple[str, int, int, str]] = set()


def _expectation(sha256: str | None, lines: int | None) -> str | None:
    if sha256:
        return f"sha256:{sha256}"
    if lines is not None:
        return f"lines:{lines}"
    return None


def _memo_key(path: Path, expectation: str) -> tuple[str, int, int, str]:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, expectation)


def _memo_path() -> Path:
    return cache_dir() / "verified.json"


def _load_memo() -> dict[str, list]:
    try:
        return json.loads(_memo_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _remember(key: tuple[str, int, int, str]) -> None:
    """Record a verified file in-process and (best effort: the cache may be read-only) on disk."""
    _VERIFIED.add(key)
    memo = _load_memo()
    memo[key[0]] = list(key[1:])
    try:
        write_json(_memo_path(), memo)
    except OSError as exc:
        logger.debug("cannot write the verification memo: %s", exc)


def _is_remembered(key: tuple[str, int, int, str]) -> bool:
    return key in _VERIFIED or _load_memo().get(key[0]) == list(key[1:])


def file_digest(path: str | Path) -> tuple[str, int]:
    """(SHA-256, line count) of the uncompressed content, streamed in 1 MiB blocks."""
    path = Path(path)
    opener = {".xz": lzma.open, ".gz": gzip.open}.get(path.suffix, open)
    digest = hashlib.sha256()
    lines, last = 0, b"\n"
    try:
        with opener(path, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
                lines += block.count(b"\n")
                last = block[-1:]
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    return digest.hexdigest(), lines + (last != b"\n")


def verify_file(path: str | Path, *, sha256: str | None = None, lines: int | None = None) -> None:
    """Check ``path`` against its expected checksum (or line count); DataError on mismatch."""
    path = Path(path)
    expectation = _expectation(sha256, lines)
    if expectation is None:
        return
    key = _memo_key(path, expectation)
    if _is_remembered(key):
        return
    actual_sha, actual_lines = file_digest(path)
    if sha256 and actual_sha != sha256:
        raise DataError(
            f"checksum mismatch for {path}: expected sha256 {sha256}, got {actual_sha} "
            f"(a corrupt or different file; replace it, or delete it to download it again)"
        )
    if not sha256 and actual_lines != lines:
        raise DataError(
            f"{path} has {actual_lines} lines, expected {lines} (a corrupt or different file; "
            f"replace it, or delete it to download it again)"
        )
    _remember(key)


# ---- download ------------------------------------------------------------------------------------
def fetch_url(url: str, destination: Path) -> None:
    """Download ``url`` to ``destination`` (replaced in tests to simulate being offline)."""
    logger.info("downloading %s", url)
    with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)


def _download(spec: DatasetSpec, needed: set[str]) -> None:
    """Fetch every source that provides a needed file into ``<cache>/<directory>/``."""
    target = cache_dir() / spec.directory
    target.mkdir(parents=True, exist_ok=True)
    expected = {f.name: _expectation(f.sha256, f.lines) for f in spec.files}
    for source in spec.sources:
        if not needed & set(source.provides()):
            continue
        if not source.members:
            with atomic_path(target / source.provides()[0]) as tmp:
                fetch_url(source.url, tmp)
                _check_download(source, tmp)
            continue
        with tempfile.TemporaryDirectory(dir=target) as scratch:
            archive_path = Path(scratch) / "archive.zip"
            fetch_url(source.url, archive_path)
            _check_download(source, archive_path)
            with zipfile.ZipFile(archive_path) as archive:
                for name, member in source.members:
                    with (
                        atomic_path(target / name) as out,
                        archive.open(member) as src,
                        open(out, "wb") as dst,
                    ):
                        shutil.copyfileobj(src, dst, 1 << 20)
                    if source.sha256 and expected.get(name):
                        # The verified archive vouches for what was unpacked from it.
                        _remember(_memo_key(target / name, expected[name]))


def _check_download(source: Source, path: Path) -> None:
    if source.sha256 is None:
        return
    actual, _ = file_digest(path)
    if actual != source.sha256:
        raise DataError(
            f"checksum mismatch for the download {source.url}: expected sha256 "
            f"{source.sha256}, got {actual}"
        )


# ---- the datasets --------------------------------------------------------------------------------
_GROUPLENS = "https://files.grouplens.org/datasets"
_MOVIELENS_LICENCE = (
    "GroupLens research licence: research use only, acknowledge the dataset, no redistribution "
    "or commercial use without permission"
)
_MOVIELENS_CITATION = (
    "F. Maxwell Harper and Joseph A. Konstan. 2015. The MovieLens Datasets: History and "
    "Context. ACM TiiS 5(4), 19. doi:10.1145/2827872"
)
# The reference pipeline (HLR, RecSys 2021): ratings >= 4 are positives, then a 10-core.
_MOVIELENS_DEFAULTS = {"min_rating": 4.0, "user_core": 10, "item_core": 10, "split": "random"}


def _movielens_zip(name: str, sha256: str, files: list[str]) -> Source:
    return Source(
        f"{_GROUPLENS}/movielens/{name}.zip",
        sha256,
        tuple((file, f"{name}/{file}") for file in files),
    )


def _movielens(
    name: str,
    release: str,
    description: str,
    interactions: int,
    files: tuple[FileSpec, ...],
    zip_sha256: str,
    zipped: list[str],
) -> DatasetSpec:
    """A GroupLens MovieLens release: ``release`` is its page under /datasets/movielens/,
    ``zipped`` the files taken from the official zip."""
    return DatasetSpec(
        name=name,
        description=description,
        directory=name,
        format="movielens",
        interactions=interactions,
        licence=_MOVIELENS_LICENCE,
        citation=_MOVIELENS_CITATION,
        url=f"https://grouplens.org/datasets/movielens/{release}/",
        files=files,
        sources=(_movielens_zip(name, zip_sha256, zipped),),
        **_MOVIELENS_DEFAULTS,
    )


register(
    _movielens(
        "ml-100k",
        "100k",
        "MovieLens 100K: 943 users, 1,682 movies, ratings 1-5 with timestamps",
        100_000,
        (
            FileSpec(
                "u.data",
                "ratings",
                "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
            ),
            FileSpec(
                "u.item",
                "titles",
                "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
            ),
        ),
        "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        ["u.data", "u.item"],
    )
)
register(
    _movielens(
        "ml-1m",
        "1m",
        "MovieLens 1M: 6,040 users, 3,706 rated movies; the original ratings.dat has "
        "timestamps, the ratings_no_timestamp.dat reconstruction does not",
        1_000_209,
        (
            FileSpec("ratings.dat", "ratings", lines=1_000_209),
            FileSpec(
                "ratings_no_timestamp.dat",
                "ratings",
                "8644714f61288184078642373c32c4db000f488ef50697a5054d583e8ecc1bb1",
            ),
            FileSpec(
                "movies.dat",
                "titles",
                "0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9",
            ),
        ),
        "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        ["ratings.dat", "movies.dat"],
    )
)
register(
    _movielens(
        "ml-20m",
        "20m",
        "MovieLens 20M: 138,493 users, 27,278 movies, half-star ratings, timestamps",
        20_000_263,
        (FileSpec("ratings.csv", "ratings", lines=20_000_264), FileSpec("movies.csv", "titles")),
        "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
        ["ratings.csv", "movies.csv"],
    )
)
register(
    _movielens(
        "ml-latest-small",
        "latest",
        "MovieLens latest-small (2018 release): 610 users, 9,724 rated movies",
        100_836,
        (FileSpec("ratings.csv", "ratings", lines=100_837), FileSpec("movies.csv", "titles")),
        "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
        ["ratings.csv", "movies.csv"],
    )
)

_LIGHTGCN_RAW = (
    "https://raw.githubusercontent.com/kuandeng/LightGCN/"
    "b067ec05f16a24e0e1efe63cd82385f0c469af20/Data/gowalla"
)
_GOWALLA_TRAIN = "7244696fdeb23911319cf7b689f2e15a3c4c92549c873a5677b44e3f13cc3e62"
_GOWALLA_TEST = "099a2a73924e4b754dc6efd730d764f492321b53c38eb93298850c83acf57be3"
register(
    DatasetSpec(
        name="gowalla",
        description="Gowalla check-ins, 10-core, with the NGCF/LightGCN 80/20 split",
        directory="gowalla",
        format="lightgcn",
        interactions=1_027_370,
        licence="SNAP research data (no formal licence); split by the NGCF/LightGCN authors",
        citation=(
            "E. Cho, S. A. Myers, J. Leskovec. Friendship and Mobility: User Movement in "
            "Location-Based Social Networks. KDD 2011; X. He et al. LightGCN. SIGIR 2020"
        ),
        url="https://snap.stanford.edu/data/loc-gowalla.html",
        files=(
            FileSpec("train.txt", "train", _GOWALLA_TRAIN),
            FileSpec("test.txt", "test", _GOWALLA_TEST),
        ),
        sources=(
            Source(f"{_LIGHTGCN_RAW}/train.txt", _GOWALLA_TRAIN),
            Source(f"{_LIGHTGCN_RAW}/test.txt", _GOWALLA_TEST),
        ),
        split="given",
    )
)

_CITEULIKE_USERS = "02d5d429b2c0362e0ed79f6ef204666b4092563d21493abf4dfb521e8a7078bf"
register(
    DatasetSpec(
        name="citeulike-t",
        description="CiteULike-t: 7,947 users, 25,584 bookmarked articles (implicit)",
        directory="citeulike-t",
        format="citeulike",
        interactions=134_860,
        licence="no licence stated by the publisher; research use",
        citation=(
            "H. Wang, B. Chen, W.-J. Li. Collaborative Topic Regression with Social "
            "Regularization for Tag Recommendation. IJCAI 2013"
        ),
        url="https://github.com/js05212/citeulike-t",
        files=(FileSpec("users.dat", "ratings", _CITEULIKE_USERS),),
        sources=(
            Source(
                "https://raw.githubusercontent.com/js05212/citeulike-t/"
                "4f103c6ea0fe407b23be230837b65517e613c34a/users.dat",
                _CITEULIKE_USERS,
            ),
        ),
        user_core=5,
        item_core=5,
    )
)

register(
    DatasetSpec(
        name="lastfm-2k",
        description="HetRec 2011 Last.fm: 1,892 users, 17,632 artists, play counts",
        directory="hetrec2011-lastfm-2k",
        format="hetrec",
        interactions=92_834,
        licence="HetRec 2011: non-commercial research use; Last.fm terms apply",
        citation=(
            "I. Cantador, P. Brusilovsky, T. Kuflik. 2nd Workshop on Information Heterogeneity "
            "and Fusion in Recommender Systems (HetRec 2011). RecSys 2011"
        ),
        url="https://grouplens.org/datasets/hetrec-2011/",
        files=(
            FileSpec(
                "user_artists.dat",
                "ratings",
                "650cd69d5a68db24b439042557aa539aec47e473273e12cdfdca2cd944b3773a",
            ),
            FileSpec(
                "artists.dat",
                "titles",
                "c173881362c6b28551368fecb3c0be5a6a30a6cd859e1f5775413dfe46d48648",
            ),
        ),
        sources=(
            Source(
                f"{_GROUPLENS}/hetrec2011/hetrec2011-lastfm-2k.zip",
                "6738f48195667ff03caaab4d32ca9a3133d8cc026b7c3cdaf6ce1010e913c59c",
                (("user_artists.dat", "user_artists.dat"), ("artists.dat", "artists.dat")),
            ),
        ),
        # Every row is one of the user's top-50 artists, so all are positives (no plays
        # threshold); 10-core as the HLR paper's protocol.
        user_core=10,
        item_core=10,
    )
)

_DIFFNET_CITATION = (
    "L. Wu, P. Sun et al. A Neural Influence Diffusion Model for Social Recommendation "
    "(DiffNet), SIGIR 2019; DiffNet++, IEEE TKDE 2020"
)
register(
    DatasetSpec(
        name="yelp-diffnet",
        description="Yelp from DiffNet++: 17,235 users, 37,378 businesses, given split",
        directory="diffnet-yelp",
        format="diffnet",
        interactions=207_945,
        licence="Yelp dataset terms: academic, non-commercial use",
        citation=_DIFFNET_CITATION,
        url="https://github.com/PeiJieSun/diffnet",
        files=(
            FileSpec(
                "yelp.train.rating",
                "train",
                "2ae26ed59e2724add6b1b657fef02b7b47f33a1c2af8c92450d888259bedce23",
            ),
            FileSpec(
                "yelp.val.rating",
                "valid",
                "a346ca257268e7048519a3cbdc098c1035db55a86cc13a32a927e2cb7386998a",
            ),
            FileSpec(
                "yelp.test.rating",
                "test",
                "d0f70986d197bd460a3127bd3bcef099890e3e2eba3379f3d5b197ebf4d1e9b0",
            ),
        ),
        split="given",
    )
)

register(
    DatasetSpec(
        name="flickr-diffnet",
        description="Flickr from DiffNet++: 8,252 users, 82,120 images, given split",
        directory="diffnet-flickr",
        format="diffnet",
        interactions=327_815,
        licence="no licence stated by the publishers; research use",
        citation=(
            "L. Wu et al. A Hierarchical Attention Model for Social Contextual Image "
            "Recommendation. IEEE TKDE 2019; " + _DIFFNET_CITATION
        ),
        url="https://github.com/PeiJieSun/diffnet",
        files=(
            FileSpec(
                "flickr.train.rating",
                "train",
                "506fec4d851f7cfe9c29c4e69268b0209663e0a6239b7669203e035a24855316",
            ),
            FileSpec(
                "flickr.val.rating",
                "valid",
                "cb2e8fb82e1e5685b6eb8d63a0e95f5c3669391dd69777c2403ed4e8a2ed78d0",
            ),
            FileSpec(
                "flickr.test.rating",
                "test",
                "19bec446356247792554269cf603abc3b9a304cfb42ac774313f39b2d10a6303",
            ),
        ),
        split="given",
    )
)

register(
    DatasetSpec(
        name="synthetic",
        description=(
            "generated: 2,000 users, 1,000 items in 10 taste groups with popularity skew "
            "(see hlrm.data.synthetic)"
        ),
        directory="",
        format="synthetic",
        interactions=DEFAULT_INTERACTIONS,
        licence="generated data, free to use",
        citation="none (generated by hlrm)",
        generate=lambda seed: make_synthetic(seed=seed),
    )
)
