"""The dataset card: README.md at the collection root, read by `datasets.load_dataset` (YAML
configs/data_files and typed features) and by people (description, license, citation,
provenance)."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import yaml

from mmu.registry.catalog import DatasetEntry
from mmu.model.schema import SPLITS, ModalitySpec, hf_features
from mmu.model.splits import SplitDefinition

HF_LICENSES = {"cc-by-4.0": "cc-by-4.0", "mit": "mit", "cc-by-nc-4.0": "cc-by-nc-4.0",
               "cc-by-sa-4.0": "cc-by-sa-4.0", "cc0-1.0": "cc0-1.0"}


def split_data_files(collection: Path, name: str, split_def: SplitDefinition) -> dict[str, list[str]]:
    """Per-split lists of partition files, relative to the collection root."""
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


def card_yaml(entry: DatasetEntry, manifest: dict, schema: pa.Schema,
              modalities: dict[str, ModalitySpec]) -> dict:
    from datasets import DatasetInfo

    features = hf_features(pa.schema([f for f in schema]), modalities)
    info = DatasetInfo(features=features)._to_yaml_dict()
    files = manifest["data_files"]
    splits = [s for s in SPLITS if files.get(s)]
    info["splits"] = [{"name": s, "num_bytes": manifest.get("split_bytes", {}).get(s, 0),
                       "num_examples": manifest["rows"][s]} for s in splits]
    lic = HF_LICENSES.get(entry.license.id.lower(), "other")
    meta = {
        "pretty_name": entry.name,
        "license": lic,
        "tags": ["astronomy", "mmu", "hats", entry.survey]
                + [m for m in entry.modalities] + (["mock-data"] if manifest["mock"] else []),
        "configs": [{"config_name": "default", "default": True,
                     "data_files": [{"split": s, "path": files[s]} for s in splits]}],
        "dataset_info": info,
    }
    if lic == "other":
        meta["license_name"] = entry.license.id
        meta["license_link"] = entry.license.url
    return meta


def render_card(entry: DatasetEntry, manifest: dict, schema: pa.Schema,
                modalities: dict[str, ModalitySpec]) -> str:
    meta = card_yaml(entry, manifest, schema, modalities)
    name, rows = entry.name, manifest["rows"]
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, width=1000).rstrip(), "---", ""]
    if manifest["mock"]:
        lines.append(f"> **MOCK DATA** built from `mmu sim` output (seed {manifest['mock_seed']}, "
                     f"simulator {manifest.get('simulator_version')}); this is not survey data.")
        lines.append("")
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
        "Use `streaming=True` for large datasets: a non-streaming load copies every row into the "
        "Hugging Face cache first. The HATS catalog (`lsdb.open_catalog`) reads partitions lazily "
        "and its margin cache makes cross-matches correct across partition borders.", "",
        "## Contents", "",
        f"- rows: {rows['total']} (train {rows['train']}, val {rows['val']}, test {rows['test']})",
        f"- modalities: {', '.join(entry.modalities)}",
        f"- splits: a pure function of sky position (HEALPix order {manifest['split']['order']}, "
        f"definition hash `{manifest['split']['hash'][:16]}`)",
        f"- schema version {manifest['schema_version']}; `mask` is True where a value is bad",
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
              f"- builder `{manifest['builder']}` v{manifest['builder_version']}, "
              f"mmu {manifest['code_version']}",
              f"- content revision `{manifest['content_revision']}`",
              f"- build key `{manifest['build_key']}`",
              f"- {len(manifest['inputs'])} raw inputs (sha256 in build.json), "
              f"{len(manifest['rejected_inputs'])} rejected, {len(manifest['rejected_rows'])} rows rejected",
              f"- built {manifest['created']}", ""]
    return "\n".join(lines)


def write_card(collection: Path, entry: DatasetEntry, manifest: dict, schema: pa.Schema,
               modalities: dict[str, ModalitySpec]) -> Path:
    from mmu.hub.layout import atomic_write_text

    path = Path(collection) / "README.md"
    atomic_write_text(path, render_card(entry, manifest, schema, modalities))
    return path
