"""The written specification of the hub format, docs/schema.md, generated from the code that
defines it (mmu.model.schema, mmu.hub.card, mmu.hub.layout, mmu.engine.builder): `mmu docs schema [--check]`.

Only the prose lives here; every column, type, unit, shape, card key and version comes from the
modules themselves, and tests/test_schema_doc.py fails when docs/schema.md is stale.
"""
from __future__ import annotations

import argparse
import inspect
import sys
import textwrap
from pathlib import Path

DOC_PATH = Path("docs") / "schema.md"

# build.json, field by field ("a.b" is a key of the object a; "a[].b" a key of each item of list a).
# tests/test_schema_doc.py checks these against a real build's manifest, so neither side drifts.
MANIFEST_FIELDS: dict[str, str] = {
    "format_version": "version of the build.json shape (`mmu.hub.manifest.BuildManifest`); a file "
                      "without it (built before the field existed) is read as version 1",
    "name": "dataset name, `<survey>_<release>[_<config>]`",
    "survey": "survey name (lower case)",
    "release": "data release (lower case)",
    "builder": "registered builder name",
    "builder_version": "the builder's version; a change invalidates the build key",
    "config": "the builder's resolved config (catalog.yaml `builder_config` plus defaults)",
    "schema_version": "version of this specification the rows follow",
    "code_version": "mmu version, plus `+g<commit>[.dirty]` when built from a checkout",
    "engine_version": "version of the shared build engine",
    "build_key": "sha256 of builder, version, config, schema/engine version, split hash, partition "
                 "settings and every input checksum: a rebuild with the same key is a no-op",
    "content_revision": "sha256 over `object_id + NUL + row digest` of every row, in object-id "
                        "(UTF-8 byte) order: what tasks and results pin",
    "mock": "true when built from `mmu sim` output (the raw root holds its `mmu-sim.json`)",
    "mock_seed": "the simulation seed (mock builds), else null",
    "simulator_version": "the simulator's version (mock builds), else null",
    "split": "the split definition used for the `split` column",
    "split.method": "split method name (`healpix-sha256-v1`)",
    "split.order": "HEALPix order (nested) at which sky pixels are assigned to splits",
    "split.seed": "key of the hash",
    "split.fractions": "target fractions of train / val / test pixels",
    "split.hash": "sha256 of the definition (tasks and results carry it)",
    "rows": "row counts",
    "rows.total": "rows in the catalog",
    "rows.train": "rows in split train",
    "rows.val": "rows in split val",
    "rows.test": "rows in split test",
    "inputs": "every raw input the builder listed, accepted or not",
    "inputs[].key": "the input's key (stable, unique within the build)",
    "inputs[].files": "the raw files it read",
    "inputs[].files[].path": "path relative to the raw root",
    "inputs[].files[].sha256": "checksum of the raw file",
    "inputs[].files[].bytes": "size of the raw file",
    "inputs[].rows": "rows it contributed (0 if rejected)",
    "rejected_inputs": "inputs rejected whole",
    "rejected_inputs[].input": "the input's key",
    "rejected_inputs[].reason": "why (exception type and message)",
    "rejected_rows": "rows rejected by validation or as duplicates: input, reason and, where known, "
                     "row, object_id and column",
    "partition": "the partitioning settings and the margin cache",
    "partition.writer": ("what wrote the catalog and margin: `mmu` (the one-pass writer, mmu/engine/hats_writer.py) "
                         "or `hats-import`"),
    "partition.partition_bytes": ("uncompressed bytes per partition actually used (the memory bound; raised above "
                                  "the setting where one pixel of the deepest allowed order is denser)"),
    "partition.row_group_bytes": "target Parquet row-group size",
    "partition.compression_level": "zstd level of the partition files",
    "partition.highest_order": "deepest order a partition may have: min(setting, margin order - 1)",
    "partition.margin_delta": ("margin order minus the deepest partition order (the margin order follows "
                               "`margin_threshold_arcsec`)"),
    "partition.margin_order": "HEALPix order of the margin cache",
    "partition.margin_threshold_arcsec": "margin width in arcsec",
    "partition.margin_catalog": "folder name of the margin cache, `<name>_<r>arcs`",
    "modalities": "modality column -> its spec (`kind` plus the spec's parameters)",
    "data_files": "split -> partition files (relative to the collection root), as on the card",
    "split_bytes": "split -> bytes of its partition files",
    "timings_s": "seconds spent per stage (standardize, partition)",
    "created": "UTC time the build finished (ISO 8601)",
    "input_notes": "(some builders) what the inputs lack without being rejected, e.g. the "
                   "legacysurvey builder's `bricks_missing_bands` (count, per band, brick keys): "
                   "their rows are kept, the missing bands masked",
    # paired (cross-matched) catalogs only, from mmu/pairing/crossmatch.py's builder
    "paired": "(paired catalogs) true",
    "inputs_datasets": "(paired catalogs) the datasets joined, left first; `mmu catalog cite` "
                       "follows them",
    "inputs_revisions": "(paired catalogs) the content revision of each input",
    "prefixes": "(paired catalogs) the column prefix of each input's modalities, e.g. `desi_`",
    "method": "(paired catalogs) `nearest` (within a radius) or `host` (directional light radius)",
    "radius_arcsec": "(paired catalogs) match radius",
    "keep_unmatched": "(paired catalogs) whether left rows without a match are kept, their missing "
                      "modalities null",
    "match": "(paired catalogs) match statistics (rows, matched per input, dropped, conflicts)",
}
MANIFEST_OPTIONAL = {"input_notes", "paired", "inputs_datasets", "inputs_revisions", "prefixes", "method",
                     "radius_arcsec", "keep_unmatched", "match"}


def _doc(obj) -> str:
    return inspect.cleandoc(obj.__doc__ or "")


def _prim(t) -> str:
    return {"float": "float32", "double": "float64", "bool": "bool"}.get(str(t), str(t))


def _storage(t, dims: list[str]) -> str:
    """Arrow storage type with sizes shown as the shape's symbols ([C,H,W] -> C, H, W)."""
    import pyarrow as pa

    if pa.types.is_fixed_size_list(t):
        return f"fixed_size_list<{_storage(t.value_type, dims[1:])}>[{dims[0] if dims else t.list_size}]"
    if pa.types.is_list(t):
        return f"list<{_storage(t.value_type, dims[1:])}>"
    return _prim(t)


def _leaf(t) -> str:
    import pyarrow as pa

    while pa.types.is_list(t) or pa.types.is_fixed_size_list(t):
        t = t.value_type
    return _prim(t)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return out + [""]


def _example_specs():
    from mmu.model.schema import ImageSpec, LightcurveSpec, SpectrumSpec

    return (
        ("image", ImageSpec(("des-g", "des-r", "des-i", "des-z"), 96, 96), ImageSpec(("des-g",), None, None)),
        ("spectrum", SpectrumSpec(7781), SpectrumSpec(None)),
        ("lightcurve", LightcurveSpec(), None),
    )


def _modality_section(kind: str, fixed, variable) -> list[str]:
    import pyarrow as pa
    import yaml

    from dataclasses import MISSING
    from dataclasses import fields as dc_fields

    from mmu.model.schema import hf_features

    cls = type(fixed)
    out = [f"### `{kind}` ({cls.__name__})", "", _doc(cls), ""]
    params = [f for f in dc_fields(cls) if f.init]
    if params:
        out += ["Spec parameters (recorded per dataset in `build.json` `modalities` and in the struct "
                "field's `spec` metadata): " + ", ".join(
                    f"`{f.name}`" + ("" if f.default is MISSING else f" (default `{f.default!r}`)")
                    for f in params), ""]
    rows = []
    for col in fixed.columns():
        dims = [d.strip() for d in col.shape.strip("[]").split(",")] if col.shape else []
        rows.append([f"`{col.name}`", _leaf(col.type), col.shape or "scalar", col.unit or "—", col.doc])
    out += _table(["field", "dtype", "shape", "unit", "meaning"], rows)
    out += ["Arrow storage, where the survey fixes the size (left) and where it varies per row (right):", ""]
    srows = []
    var_cols = {c.name: c for c in variable.columns()} if variable is not None else {}
    for col in fixed.columns():
        dims = [d.strip() for d in col.shape.strip("[]").split(",")] if col.shape else []
        v = var_cols.get(col.name)
        srows.append([f"`{col.name}`", f"`{_storage(col.type, dims)}`",
                      f"`{_storage(v.type, dims)}`" if v is not None else "(always variable)"])
    out += _table(["field", "fixed size", "variable size"], srows)
    schema = pa.schema([pa.field(kind, pa.struct([c.arrow_field() for c in fixed.columns()]))])
    feats = hf_features(schema, {kind: fixed})._to_yaml_list()
    args = ", ".join(f"{k}={tuple(v) if isinstance(v, list) else v!r}" for k, v in fixed.describe().items())
    out += [f"Dataset-card feature of `{cls.__name__}({args})`:", "", "```yaml",
            yaml.safe_dump(feats, sort_keys=False).rstrip(), "```", ""]
    return out


def _example_card() -> str:
    import pyarrow as pa
    import yaml

    from mmu.hub.card import card_yaml
    from mmu.registry.catalog import DatasetEntry
    from mmu.model.schema import SpectrumSpec, dataset_schema

    entry = DatasetEntry(
        name="mysurvey_dr1", survey="mysurvey", release="dr1", description="An example.",
        modalities=["spectrum"], builder="mysurvey",
        raw={"archive": "https://archive.example/", "pattern": "spec-*.fits", "docs": "https://docs.example/"},
        license={"id": "CC-BY-4.0", "url": "https://creativecommons.org/licenses/by/4.0/"},
        citation=["@misc{mysurvey, title={My survey}}"], homepage="https://survey.example/")
    modalities = {"spectrum": SpectrumSpec(4)}
    schema = dataset_schema(modalities, [pa.field("z", pa.float32())], with_index=True)
    files = {"train": ["mysurvey_dr1/dataset/Norder=4/Dir=0/Npix=1.parquet"],
             "val": ["mysurvey_dr1/dataset/Norder=4/Dir=0/Npix=2.parquet"], "test": []}
    manifest = {"data_files": files, "split_bytes": {"train": 1000, "val": 100, "test": 0},
                "rows": {"total": 11, "train": 10, "val": 1, "test": 0}, "mock": False}
    meta = card_yaml(entry, manifest, schema, modalities)
    return yaml.safe_dump(meta, sort_keys=False, width=1000).rstrip()


def render_schema_doc() -> str:
    """Render docs/schema.md, the hub format specification, from the schema code and docstrings.

    Returns:
        The Markdown text, ending in one newline.
    """
    from mmu.engine import builder
    from mmu.hub import card
    from mmu.hub import layout as hub
    from mmu.model import splits
    from mmu.model.schema import (BAND_PATTERN, COMMON_COLUMNS, INDEX_DOC, SCHEMA_HISTORY, SCHEMA_VERSION,
                            SPLITS, dataset_schema, image_array, lightcurve_array, spectrum_array)

    nonnull = {f.name for f in dataset_schema({}) if not f.nullable}
    L = ["<!-- Generated by `mmu docs schema` from mmu/model/schema.py, mmu/hub/card.py, mmu/hub/layout.py, mmu/engine/builder.py",
         "     and mmu/hub/schemadoc.py. Do not edit by hand: tests/test_schema_doc.py checks it is current. -->",
         "", f"# The mmu hub format, schema version {SCHEMA_VERSION}", "",
         "Everything a builder for a new survey must produce, and everything a reader may rely on: the",
         "row schema (common columns and modality structs), the files of a hub dataset, its dataset card",
         "and its `build.json` manifest.", "",
         "## Conventions", "",
         "- **`mask` is True where a value is bad**, in every modality (image pixels, spectrum pixels,",
         "  light-curve epochs). Bad values are masked, never replaced by sentinels.",
         "- **No padding.** Variable lengths are Arrow lists; nothing is zero- or -99-padded.",
         f"- **Band names** are `<survey>-<band>`, lower case, matching `{BAND_PATTERN.pattern}`",
         "  (`des-g`, `sdss-r`, `lsst-u`).",
         "- **Units** are stored in each Arrow field's metadata (`unit`, with a `doc` string), as listed",
         "  below; a survey-specific flux unit (images, light curves) is a parameter of the modality spec.",
         "- Each modality column carries field metadata `modality` (its kind) and `spec` (its parameters,",
         f"  JSON); the Parquet schema carries `mmu.schema_version` = `{SCHEMA_VERSION}`.",
         "- Survey-native catalog columns (redshifts, classes, fluxes) keep the survey's names in lower",
         "  case, next to the standard columns, and may not reuse a standard column's name.",
         "- Coordinates are ICRS degrees; `ra` in [0, 360), `dec` in [-90, 90].",
         "- **`lsf_sigma` includes the pixel.** It is the sigma of the line-spread function as it acts",
         "  on the pixelised spectrum: the instrument's LSF convolved with one pixel of width Δλ,",
         "  σ² = σ_LSF² + Δλ²/12 (an unresolved line's width as measured in the data). DESI: the",
         "  second moment of the resolution matrix's row, which integrates over the pixel (where the",
         "  arms overlap, the ivar-weighted mean of the rows' variances, as `coadd_cameras` merges",
         "  them; rows cut off at an arm's edge left out). SDSS and BOSS: `wdisp` is a Gaussian sigma",
         "  fitted without the pixel, so `lsf_sigma` = sqrt(wdisp² + 1/12) pixels of 1e-4 dex.", "",
         "## Common columns", "",
         "Every row of every dataset has these columns; the modality columns and the survey's own",
         "columns follow. `_healpix_29` is added when the rows are partitioned.", ""]
    rows = [[f"`{c.name}`", _prim(c.type), c.unit or "—", "no" if c.name in nonnull else "yes", c.doc]
            for c in COMMON_COLUMNS]
    rows.append([f"`{INDEX_DOC.name}`", _prim(INDEX_DOC.type), "—", "no", INDEX_DOC.doc])
    L += _table(["column", "dtype", "unit", "nullable", "meaning"], rows)
    L += [f"`split` takes the values {', '.join(f'`{s}`' for s in SPLITS)}. "
          + " ".join(_doc(splits).splitlines()[2:]).strip()
          + " The one definition (order, seed, fractions, hash) is `splits` in catalog.yaml.", ""]
    L += ["## Modalities", "",
          "A modality is a struct column, named after its kind (`image`, `spectrum`, `lightcurve`; in a",
          "paired catalog prefixed by the survey, e.g. `desi_spectrum`). A row may lack a modality only",
          "in a paired catalog.", ""]
    for kind, fixed, variable in _example_specs():
        L += _modality_section(kind, fixed, variable)
    L += ["Builders make these structs from numpy buffers with:", ""]
    for fn in (image_array, spectrum_array, lightcurve_array):
        L.append(f"- `mmu.model.schema.{fn.__name__}`: {_doc(fn)}")
    L += ["", "## Row validation", "",
          "The engine (mmu/model/validate.py) casts each chunk a builder yields to the dataset schema (a",
          "missing or extra column rejects the input) and rejects, with the reason, every row with: a",
          "missing or duplicate `object_id`; non-finite or out-of-range `ra`/`dec`; a missing modality;",
          "arrays of one modality of unequal lengths; a non-finite value at an unmasked pixel or epoch;",
          "negative `ivar`, or no usable pixel at all; a spectrum wavelength that is not positive and",
          "strictly increasing; a band name that breaks the naming rule; a non-positive `psf_fwhm`,",
          "`scale`, or unmasked `flux_err`; a light curve with no epochs.", "",
          "## A hub dataset on disk", "", "```", *textwrap.dedent(_doc(hub).split("\n\n", 1)[1]).strip().splitlines(),
          "```", "",
          "- `<name>/` is a HATS catalog: `dataset/Norder=K/Dir=D/Npix=P.parquet` partitions (nested",
          "  HEALPix pixel P at order K, D = P // 10000 * 10000), `dataset/_metadata` and",
          "  `_common_metadata`, `partition_info.csv`, `properties` / `hats.properties`, `skymap.fits`.",
          "- `<name>_<r>arcs/` is the margin cache: for each partition, the rows of the neighbouring",
          "  pixels within r arcsec, so cross-matches are correct across partition borders. Readers of",
          "  rows (`datasets.load_dataset`) never see it; `lsdb.open_catalog` uses it.",
          "- `collection.properties` names the primary table (`hats_primary_table_url`) and the margins",
          "  (`all_margins`, `default_margin`).",
          "- Partitions never mix splits: no partition is coarser than the split order.",
          "- Nothing else belongs to a dataset; `mmu push` uploads exactly these files.", "",
          "## The dataset card (`README.md`)", "",
          _doc(card).replace("\n", " "), "",
          "Its YAML header, for a one-spectrum example dataset (`mmu.hub.card.card_yaml`):", "",
          "```yaml", _example_card(), "```", "",
          "- `configs[0].data_files` lists every partition file of the catalog, explicitly, under the",
          "  split its pixels belong to; empty splits are left out. The margin cache is never listed.",
          "- `dataset_info.features` is derived from the Parquet schema with `mmu.model.schema.hf_features`:",
          "  fixed-size images become `Array3D`, fixed-length arrays `List(length=N)`.",
          "- `license` is the Hub's license id, or `other` with `license_name` and `license_link`.",
          "- Mock builds add the `mock-data` tag and a banner. Below the YAML: description, usage, contents,",
          "  license, acknowledgement, citation (BibTeX) and provenance (builder, content revision, build",
          "  key, inputs and rejections).", "",
          "## The manifest (`build.json`)", "",
          "Written last, atomically; its presence means the build is complete.", ""]
    L += _table(["field", "meaning"], [[f"`{k}`", v] for k, v in MANIFEST_FIELDS.items()])
    L += ["## Writing a builder", "", _doc(builder), "",
          "Register the builder's name in `catalog.yaml` (`builder:`; or `package.module:Class` for a",
          "plugin), with the dataset's license, citation and acknowledgement. A builder raises",
          "`mmu.engine.builder.InputRejected` for an unusable input and yields `mmu.engine.builder.Rejection` for a bad",
          "row it can name; anything else it raises rejects the input with the exception as the reason.", "",
          "## Schema versions", ""]
    L += _table(["version", "changes"], [[f"`{v}`", c] for v, c in SCHEMA_HISTORY.items()])
    return "\n".join(L).rstrip() + "\n"


def default_doc_path() -> Path:
    """The checkout's docs/schema.md."""
    return Path(__file__).resolve().parents[2] / DOC_PATH


def configure_docs_parser(p: argparse.ArgumentParser) -> None:
    """Add the `mmu docs schema` options (`--check`, `--output`) to `p`.

    Args:
        p: the parser (or subparser) to configure.
    """
    p.description = "Write docs/schema.md, the hub format specification, from the schema code."
    p.add_argument("--check", action="store_true", help="exit 1 if the file differs from the code")
    p.add_argument("-o", "--output", default=None, help=f"file to write (default: the checkout's {DOC_PATH})")


def run_docs_schema(args) -> int:
    """Write the rendered schema doc, or with `--check` compare it with the file on disk.

    Args:
        args: the parsed `mmu docs schema` arguments.

    Returns:
        The exit status: 0 when written or current; 1 when `--check` finds it missing or out of date.
    """
    path = Path(args.output) if args.output else default_doc_path()
    text = render_schema_doc()
    if args.check:
        current = path.read_text() if path.is_file() else None
        if current != text:
            print(f"error: {path} is {'missing' if current is None else 'out of date'}; "
                  f"run `mmu docs schema` and commit the result", file=sys.stderr)
            return 1
        print(f"{path} is current")
        return 0
    from mmu.hub.layout import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run `mmu docs schema` as a standalone command.

    Args:
        argv: the command-line arguments (default: `sys.argv[1:]`).

    Returns:
        The exit status (see `run_docs_schema`).
    """
    p = argparse.ArgumentParser(prog="mmu docs schema")
    configure_docs_parser(p)
    return run_docs_schema(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
