"""The dataset card: README.md at the collection root, read by `datasets.load_dataset` (YAML
configs/data_files and typed features) and by people (description, license, citation,
provenance).

The card is a `huggingface_hub.DatasetCard`; its metadata a `DatasetCardData`. The typed
`dataset_info` (features, splits) is written by `datasets.info.DatasetInfosDict.to_dataset_card_data`
and read back by `DatasetInfosDict.from_dataset_card_data`, the pair `datasets` itself uses
when it pushes a dataset and when it loads one, so the YAML is exactly what the loader parses.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from mmu.model.schema import SPLITS, ModalitySpec, hf_features
from mmu.model.splits import SplitDefinition
from mmu.registry.catalog import DatasetEntry

HF_LICENSES = {"cc-by-4.0": "cc-by-4.0", "mit": "mit", "cc-by-nc-4.0": "cc-by-nc-4.0",
               "cc-by-sa-4.0": "cc-by-sa-4.0", "cc0-1.0": "cc0-1.0"}
# The order of the card's top-level YAML keys (docs/schema.md shows it).
CARD_KEYS = ["pretty_name", "license", "license_name", "license_link", "tags", "configs", "dataset_info"]


def manifest_data(manifest: Any) -> dict:
    """The build manifest as JSON data: a typed manifest (anything with `to_json()`, e.g.
    `mmu.hub.manifest.BuildManifest`) or the dict read from build.json."""
    return manifest.to_json() if hasattr(manifest, "to_json") else dict(manifest)


def split_data_files(collection: Path, name: str, split_def: SplitDefinition) -> dict[str, list[str]]:
    """Per-split lists of partition files, relative to the collection root.

    Args:
        collection: the collection folder (holding the HATS catalog `name`).
        name: the dataset (and catalog folder) name.
        split_def: the split definition; each partition's split is that of its pixel.

    Returns:
        {"train": [...], "val": [...], "test": [...]}: POSIX paths, in (order, pixel) order.

    Raises:
        FileNotFoundError: a partition HATS lists has no file.

    Example:
        >>> split_data_files(Path("hub/desi_dr1"), "desi_dr1", SplitDefinition())["val"][:1]  # doctest: +SKIP
        ['desi_dr1/dataset/Norder=4/Dir=0/Npix=1093.parquet']
    """
    from hats import read_hats
    from hats.io import paths

    cat = read_hats(collection / name)
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for pix in sorted(cat.get_healpix_pixels(), key=lambda p: (p.order, p.pixel)):
        split = split_def.split_of_partition(pix.order, pix.pixel)
        full = Path(str(paths.pixel_catalog_file(collection / name, pix)))
        path = full.relative_to(collection).as_posix()
        if not (collection / path).is_file():
            raise FileNotFoundError(f"partition file {path} listed by HATS is missing")
        out[split].append(path)
    return out


def card_data(entry: DatasetEntry, manifest: Any, schema: pa.Schema,
              modalities: dict[str, ModalitySpec]):
    """The card's metadata as a `huggingface_hub.DatasetCardData`.

    Args:
        entry: the dataset's catalog entry (name, survey, license, modalities).
        manifest: the build manifest (typed or its JSON dict); uses `data_files`, `rows`,
            `split_bytes` and `mock`.
        schema: the Parquet schema of the data files.
        modalities: the modality specs of the schema's modality columns.

    Returns:
        A `DatasetCardData` with pretty_name, license (or `other` with license_name and
        license_link), tags, one `default` config whose data_files list every partition file
        under its split (empty splits left out), and `dataset_info` with typed features and
        per-split sizes.

    Example:
        >>> card_data(entry, manifest, schema, modalities).to_dict()["configs"][0]["config_name"]  # doctest: +SKIP
        'default'
    """
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    m = manifest_data(manifest)
    files = m["data_files"]
    splits = [s for s in SPLITS if files.get(s)]
    split_bytes = m.get("split_bytes") or {}
    lic = HF_LICENSES.get(entry.license.id.lower(), "other")
    data = DatasetCardData(
        pretty_name=entry.name, license=lic,
        license_name=entry.license.id if lic == "other" else None,
        license_link=entry.license.url if lic == "other" else None,
        tags=["astronomy", "mmu", "hats", entry.survey, *entry.modalities]
             + (["mock-data"] if m["mock"] else []),
        configs=[{"config_name": "default", "default": True,
                  "data_files": [{"split": s, "path": files[s]} for s in splits]}])
    info = DatasetInfo(
        features=hf_features(pa.schema(list(schema)), modalities),
        splits=SplitDict({s: SplitInfo(name=s, num_bytes=split_bytes.get(s, 0),
                                       num_examples=m["rows"][s]) for s in splits}))
    DatasetInfosDict({"default": info}).to_dataset_card_data(data)
    return data


def card_yaml(entry: DatasetEntry, manifest: Any, schema: pa.Schema,
              modalities: dict[str, ModalitySpec]) -> dict:
    """The card's YAML header as a dict, keys in `CARD_KEYS` order (what docs/schema.md shows).

    Args:
        entry, manifest, schema, modalities: as for `card_data`.

    Returns:
        The metadata dict (absent optional keys left out).
    """
    meta = card_data(entry, manifest, schema, modalities).to_dict()
    return {k: meta[k] for k in [*CARD_KEYS, *(k for k in meta if k not in CARD_KEYS)] if k in meta}


def card_body(entry: DatasetEntry, manifest: Any) -> str:
    """The Markdown below the YAML header: banner (mock data), description, usage, contents,
    license, acknowledgement, citation and provenance.

    Args:
        entry: the dataset's catalog entry.
        manifest: the build manifest (typed or its JSON dict).

    Returns:
        The Markdown text.
    """
    m = manifest_data(manifest)
    name, rows = entry.name, m["rows"]
    lines = []
    if m["mock"]:
        lines += [(f"> **MOCK DATA** built from `mmu sim` output (seed {m['mock_seed']}, "
                   f"simulator {m.get('simulator_version')}); this is not survey data."), ""]
    lines += [
        f"# {name}", "",
        entry.description.strip(), "",
        "## Use", "",
        "```python",
        "from datasets import load_dataset",
        f'ds = load_dataset("path/to/{name}", split="train", streaming=True)',
        "import lsdb",
        f'cat = lsdb.open_catalog("path/to/{name}")',
        "```", "",
        ("Use `streaming=True` for large datasets: a non-streaming load copies every row into the "
         "Hugging Face cache first. The HATS catalog (`lsdb.open_catalog`) reads partitions lazily "
         "and its margin cache makes cross-matches correct across partition borders."), "",
        "## Contents", "",
        f"- rows: {rows['total']} (train {rows['train']}, val {rows['val']}, test {rows['test']})",
        f"- modalities: {', '.join(entry.modalities)}",
        (f"- splits: a pure function of sky position (HEALPix order {m['split']['order']}, "
         f"definition hash `{m['split']['hash'][:16]}`)"),
        f"- schema version {m['schema_version']}; `mask` is True where a value is bad",
        "",
        "## License", "",
        f"{entry.license.id} ({entry.license.url})"
        + ("  **Non-commercial use only.**" if entry.license.non_commercial else "")
        + (f" {entry.license.notes}" if entry.license.notes else ""), "",
    ]
    if entry.acknowledgement:
        lines += ["## Acknowledgement", "", entry.acknowledgement.strip(), ""]
    lines += ["## Citation", "", "```bibtex", *[c.strip() for c in entry.citation], "```", "",
              "## Provenance", "",
              f"- builder `{m['builder']}` v{m['builder_version']}, mmu {m['code_version']}",
              f"- content revision `{m['content_revision']}`",
              f"- build key `{m['build_key']}`",
              (f"- {len(m['inputs'])} raw inputs (sha256 in build.json), "
               f"{len(m['rejected_inputs'])} rejected, {len(m['rejected_rows'])} rows rejected"),
              f"- built {m['created']}", ""]
    return "\n".join(lines)


def render_card(entry: DatasetEntry, manifest: Any, schema: pa.Schema,
                modalities: dict[str, ModalitySpec]):
    """The whole card as a `huggingface_hub.DatasetCard` (`str(card)` is the README text).

    Args:
        entry, manifest, schema, modalities: as for `card_data`.

    Returns:
        The `DatasetCard`.

    Example:
        >>> card = render_card(entry, manifest, schema, modalities)   # doctest: +SKIP
        >>> card.data.license, str(card).startswith("---\\n")
        ('cc-by-4.0', True)
    """
    from huggingface_hub import DatasetCard

    data = card_data(entry, manifest, schema, modalities)
    header = data.to_yaml(original_order=CARD_KEYS)
    return DatasetCard(f"---\n{header}\n---\n\n{card_body(entry, manifest)}")


def write_card(collection: Path, entry: DatasetEntry, manifest: Any, schema: pa.Schema,
               modalities: dict[str, ModalitySpec]) -> Path:
    """Write the dataset card to `collection/README.md`, atomically.

    Args:
        collection: the collection folder.
        entry, manifest, schema, modalities: as for `card_data`.

    Returns:
        The path written.
    """
    from mmu.hub.layout import atomic_write

    path = Path(collection) / "README.md"
    atomic_write(path, str(render_card(entry, manifest, schema, modalities)))
    return path


def read_card_features(meta: Mapping) -> Any:
    """The typed features a card's metadata declares, parsed as `datasets.load_dataset` parses them.

    Args:
        meta: the card's metadata (`DatasetCard.load(path).data`, or its `to_dict()`).

    Returns:
        The `datasets.Features` of the `default` config (or the only one).

    Raises:
        ValueError: the metadata declares no `dataset_info`, or its features do not parse.
    """
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    data = meta if isinstance(meta, DatasetCardData) else DatasetCardData(**dict(meta))
    try:
        infos = DatasetInfosDict.from_dataset_card_data(data)
    except Exception as e:  # noqa: BLE001 - any parse failure is the finding
        raise ValueError(f"card dataset_info does not parse as datasets DatasetInfo: {e}") from None
    info = infos.get("default") or next(iter(infos.values()), None)
    if info is None or info.features is None:
        raise ValueError("card YAML declares no dataset_info.features")
    return info.features
