"""The asset store's failure paths, on a throwaway cache with fake downloads (no network needed)."""

import hashlib
import subprocess

import pytest

from repro import assets
from repro.assets import store

PAYLOAD = b"pretend wheel contents"
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def fake_asset(sha=PAYLOAD_SHA):
    source = store.Source("demo-pkg", "1.0", "demo_pkg-1.0.whl", sha, len(PAYLOAD))
    return store.Asset("demo", "model", "a demo", (source,), "none", 1, "MIT", "nobody")


def writing_downloader(content=PAYLOAD):
    def download(source, dest):
        path = dest / source.file
        path.write_bytes(content)
        return path
    return download


def copy_build(asset, files, out):
    (out / "weights.bin").write_bytes(files[0].read_bytes())


def test_install_verifies_converts_and_writes_receipt(empty_cache):
    folder = store.install(fake_asset(), copy_build, writing_downloader())
    assert (folder / "weights.bin").read_bytes() == PAYLOAD
    assert store.status(fake_asset()) == "ready"
    assert sorted(p.name for p in empty_cache.iterdir()) == ["demo", "downloads"]


def test_checksum_mismatch_deletes_the_file_and_installs_nothing(empty_cache):
    with pytest.raises(assets.ChecksumMismatchError, match="expected sha256") as err:
        store.install(fake_asset(), copy_build, writing_downloader(b"tampered"))
    assert "deleted" in str(err.value)
    assert not (empty_cache / "demo").exists()
    assert list((empty_cache / "downloads").iterdir()) == []


def test_failed_conversion_leaves_no_partial_asset(empty_cache):
    def broken_build(asset, files, out):
        (out / "half.bin").write_bytes(b"x")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError, match="conversion failed"):
        store.install(fake_asset(), broken_build, writing_downloader())
    assert [p.name for p in empty_cache.iterdir()] == ["downloads"]  # no staging folder, no asset


def test_reinstall_replaces_an_existing_asset_atomically(empty_cache):
    store.install(fake_asset(), copy_build, writing_downloader())
    (empty_cache / "demo" / "stale.txt").write_text("old")
    store.install(fake_asset(), copy_build, writing_downloader())
    assert not (empty_cache / "demo" / "stale.txt").exists()
    assert sorted(p.name for p in empty_cache.iterdir()) == ["demo", "downloads"]


def test_registry_failure_says_what_failed_and_how_to_retry(empty_cache, monkeypatch):
    def fail(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version (connection refused)")

    monkeypatch.setattr(store.subprocess, "run", fail)
    with pytest.raises(assets.RegistryUnreachableError) as err:
        store.install(fake_asset(), copy_build)
    message = str(err.value)
    assert "demo-pkg==1.0" in message and "connection refused" in message
    assert "python -m repro assets fetch" in message
    assert not (empty_cache / "demo").exists()


def test_unknown_asset_lists_the_known_ones():
    with pytest.raises(assets.UnknownAssetError) as err:
        assets.get_asset("gpt-5")
    assert "gpt-5" in str(err.value) and "smollm2-135m-instruct" in str(err.value)


def test_missing_asset_error_names_the_fetch_command(empty_cache):
    with pytest.raises(assets.AssetNotFetchedError, match="python -m repro assets fetch mobilenet-v2"):
        assets.load_image_encoder("mobilenet-v2")


def test_changed_manifest_marks_installed_asset_stale(empty_cache):
    store.install(fake_asset(), copy_build, writing_downloader())
    newer = store.Asset(**{**fake_asset().__dict__, "revision": 2})
    assert store.status(newer) == "stale"


def test_manifest_entries_are_complete():
    manifest = assets.load_manifest()
    assert {"smollm2-135m-instruct", "minilm-l6", "mobilenet-v2", "bigbench", "mni152"} <= set(manifest)
    for asset in manifest.values():
        assert asset.licence and asset.citation and asset.sources
        for s in asset.sources:
            assert len(s.sha256) == 64 and s.size > 0 and s.version
