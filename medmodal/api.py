"""The Python API (in the manner of timm / open_clip), re-exported lazily by ``import medmodal``::

    import medmodal

    medmodal.list_models()                                   # presets; kind="fusion" etc. for parts
    model = medmodal.create_model("tiny", labels=["nodule", "effusion"])
    result = medmodal.train("data/", "tiny", out="runs/tiny")  # or a list of Study, or a DataFrame
    predictor = medmodal.load("runs/tiny")                   # or the checkpoint file alone
    predictor.predict(array_or_pil_or_dicom_or_path, "Cough.")

Configurations (:func:`get_config`) are given as a preset name (:mod:`medmodal.models.presets`),
a :class:`~medmodal.config.Config`, a nested dict (as in a YAML file) or a YAML path, plus
optional dotted ``overrides``. docs/python-api.md walks through an example.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medmodal.config import (
    SECTION_FIELDS,
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    load_config,
)
from medmodal.data.tokenizer import ReportTokenizer
from medmodal.data.types import Study
from medmodal.models import registry
from medmodal.models.multimodal import MultimodalModel
from medmodal.models.multimodal import create_model as build_model
from medmodal.models.presets import PRESETS, preset_config
from medmodal.serving.predictor import Predictor
from medmodal.training.trainer import TrainResult
from medmodal.training.trainer import train as train_run

if TYPE_CHECKING:
    import lightning as L

ConfigSource = str | Path | Config | Mapping[str, Any]

# The manifest written for studies given in memory (in the run folder).
STUDIES_MANIFEST = "studies.jsonl"
PART_KINDS = ("image_encoder", "text_encoder", "fusion", "decoder")


def list_models(filter: str = "*", *, kind: str = "preset") -> list[str]:
    """Names of the model presets (default), or of the registered parts of one ``kind``
    (``image_encoder``, ``text_encoder``, ``fusion``, ``decoder``), matching the shell-style
    ``filter`` (``"*net*"``), sorted."""
    if kind == "preset":
        names = sorted(PRESETS)
    elif kind in PART_KINDS:
        names = registry.available(kind)
    else:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(('preset', *PART_KINDS))}")
    return [name for name in names if fnmatch.fnmatchcase(name, filter)]


def get_config(config: ConfigSource = "default", overrides: Mapping[str, Any] | None = None) -> Config:
    """The validated :class:`Config` of a preset name, a Config, a nested dict or a YAML path,
    with dotted ``overrides`` (``{"train.epochs": 3}``) applied.

    Raises:
        ConfigError: unknown preset / missing file / invalid values (the message names the field).
    """
    if isinstance(config, Config):
        resolved = config.model_copy(deep=True)
    elif isinstance(config, Mapping):
        resolved = config_from_dict(dict(config), "the config dict")
    elif isinstance(config, str) and config in PRESETS:
        resolved = preset_config(config)
    elif isinstance(config, (str, Path)) and (
        Path(config).suffix in (".yaml", ".yml") or Path(config).is_file()
    ):
        resolved = load_config(config)
    elif isinstance(config, (str, Path)):
        raise ConfigError(
            f"{config!s}: neither a model preset ({', '.join(sorted(PRESETS))}) nor a YAML file"
        )
    else:
        raise ConfigError(f"config: a preset name, Config, dict or YAML path, not {type(config).__name__}")
    return apply_overrides(resolved, dict(overrides)) if overrides else resolved


def create_model(
    config: ConfigSource = "default",
    *,
    labels: Sequence[str],
    tokenizer: ReportTokenizer | None = None,
    texts: Iterable[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> MultimodalModel:
    """An untrained :class:`~medmodal.models.multimodal.MultimodalModel` predicting ``labels``.

    The vocabulary is ``tokenizer``'s, else learnt from ``texts`` (``data.min_token_freq``),
    else the special tokens only. The model gets ``label_names`` (the C label names, in logit
    order) and ``tokenizer`` attributes.

    Raises:
        ValueError: ``labels`` empty, not strings or repeated; ``tokenizer`` and ``texts`` both given.
        ConfigError: see :func:`get_config`.
    """
    names = checked_labels(labels)
    if tokenizer is not None and texts is not None:
        raise ValueError("give tokenizer or texts, not both")
    cfg = get_config(config, overrides)
    if tokenizer is None:
        tokenizer = ReportTokenizer.train(list(texts or []), min_freq=cfg.data.min_token_freq)
    model = build_model(cfg.model, vocab_size=tokenizer.vocab_size, num_labels=len(names), pad_id=tokenizer.pad_id,
                        bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id)  # fmt: skip
    model.label_names = names
    model.tokenizer = tokenizer
    return model


def checked_labels(labels: Sequence[str]) -> list[str]:
    """``labels`` as a list of distinct non-empty strings (a bare string is refused, it is not a list)."""
    if isinstance(labels, str) or not all(isinstance(name, str) and name.strip() for name in labels):
        raise ValueError(f"labels: a list of non-empty label names, not {labels!r}")
    names = list(labels)
    if not names:
        raise ValueError("labels: at least one label name")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"labels: {repeated} listed more than once")
    return names


def train(
    data: str | Path | Sequence[Study] | Any,
    config: ConfigSource = "default",
    *,
    out: str | Path,
    callbacks: Sequence[L.Callback] = (),
    overrides: Mapping[str, Any] | None = None,
    force: bool = False,
) -> TrainResult:
    """Train into the run folder ``out`` (resumes there like ``medmodal train``).

    Args:
        data: a data folder or manifest file; or the studies themselves, as a list of
            :class:`~medmodal.data.types.Study` or a pandas DataFrame with manifest columns
            (``id``, ``image``, sections or ``report``, ``labels``, ``split``...; relative image
            paths are relative to the working directory). Studies given in memory are written to
            ``out/studies.jsonl`` and read back through the manifest validation like a file;
            their image paths may lie anywhere (``data.allow_outside_paths`` is set).
        config: see :func:`get_config`; ``overrides`` are applied to it.
        callbacks: further Lightning callbacks (after medmodal's checkpointing and seeding).
        force: start over, deleting an earlier run's checkpoints and logs in ``out``.
    """
    cfg = get_config(config, overrides)
    if not isinstance(data, (str, Path)):
        data = write_studies_manifest(data, Path(out) / STUDIES_MANIFEST)
        cfg = apply_overrides(cfg, {"data.allow_outside_paths": True})
    return train_run(data, cfg, out, force=force, callbacks=list(callbacks))


def load(run_or_checkpoint: str | Path, *, device: str = "cpu") -> Predictor:
    """A :class:`~medmodal.serving.predictor.Predictor` of a run folder (its best checkpoint,
    ``calibration.json`` applied) or of a checkpoint file alone (labels, tokenizer and calibration
    stored in it; see :meth:`Predictor.save`)."""
    return Predictor.from_run(run_or_checkpoint, device=device)


# ------------------------------------------------------------------ studies in memory
def write_studies_manifest(studies: Sequence[Study] | Any, path: Path) -> Path:
    """Write ``studies`` (Study records or a DataFrame) as a JSON Lines manifest at ``path``."""
    rows = dataframe_rows(studies) if hasattr(studies, "to_dict") else [study_row(s) for s in studies]
    if not rows:
        raise ValueError("data: no studies given")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    tmp.replace(path)
    return path


def study_row(study: Study) -> dict[str, Any]:
    """The manifest row of a :class:`Study` (image path absolute)."""
    if not isinstance(study, Study):
        raise TypeError(f"data: a list of Study records, got a {type(study).__name__}")
    row: dict[str, Any] = {
        "id": study.id, "patient_id": study.patient_id, "image": str(Path(study.image).resolve()) if study.image else "",
        "labels": list(study.labels), "split": study.split, "site": study.site, "view": study.view,
        "boxes": [{"label": box.label, "box": list(box.box)} for box in study.boxes],
    }  # fmt: skip
    row.update({name: study.sections.get(name, "") for name in SECTION_FIELDS})
    return {key: value for key, value in row.items() if value is not None}


def dataframe_rows(frame: Any) -> list[dict[str, Any]]:
    """The rows of a pandas DataFrame as plain JSON values (NaN -> absent, image paths absolute)."""
    rows = []
    for record in frame.to_dict(orient="records"):
        row = {str(key): plain_value(value) for key, value in record.items()}
        row = {key: value for key, value in row.items() if value is not None}
        if row.get("image"):
            row["image"] = str(Path(str(row["image"])).resolve())
        rows.append(row)
    return rows


def plain_value(value: Any) -> Any:
    """A DataFrame cell as a JSON value: numpy scalars unwrapped, NaN / None -> None, arrays -> lists."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value
