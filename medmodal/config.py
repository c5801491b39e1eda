"""Typed configuration, validated on load.

A run is described by one :class:`Config` (``data``, ``model``, ``train``,
``evaluate`` sections). YAML files are validated field by field: an unknown key
or a bad value fails with its dotted path, e.g. ``train.lr: Input should be greater than 0``.
The names of model parts are checked against the registry by the models layer
(:func:`medmodal.models.registry.check_part_names`, called by ``create_model``), which names
the field: ``model.fusion.name: unknown fusion 'gatd'; available: bilinear, concat, ...``.

Every field has a default, so ``Config()`` is the default configuration and a
YAML file only lists what it changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medmodal.errors import ConfigError
from medmodal.runs import write_text_atomic

ModelT = TypeVar("ModelT", bound=BaseModel)

# The report sections of a study (manifest columns; Study.sections keys).
SECTION_FIELDS = ("indication", "findings", "impression")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- data
class AugmentConfig(_Section):
    """Image augmentation at training time (MONAI transforms)."""

    enabled: bool = False
    rotate_degrees: float = Field(5.0, ge=0, le=45)
    scale: float = Field(0.05, ge=0, le=0.5)
    contrast_gamma: tuple[float, float] = (0.8, 1.25)
    noise_std: float = Field(0.02, ge=0, le=0.5)
    blur_sigma: tuple[float, float] = (0.0, 0.0)
    # Appearance shifts between sites: add U(-shift, shift) / multiply by 1 + U(-scale, scale).
    intensity_shift: float = Field(0.0, ge=0, le=0.5)
    intensity_scale: float = Field(0.0, ge=0, le=0.9)
    prob: float = Field(0.5, ge=0, le=1)


class DataConfig(_Section):
    """Which data, which fields, how to read and split it."""

    manifest: str = "manifest.csv"
    labels: list[str] | None = None  # None: the union of labels over the manifest
    text_fields: list[str] = ["indication"]
    target_fields: list[str] = ["findings", "impression"]
    image_size: int = Field(128, ge=16, le=1024)
    max_text_tokens: int = Field(48, ge=4, le=1024)
    max_target_tokens: int = Field(80, ge=4, le=1024)
    min_token_freq: int = Field(2, ge=1)
    on_bad_row: Literal["skip", "error"] = "skip"
    check_images: bool = True
    # Accept manifest image paths that resolve (after symlinks) outside the manifest's folder.
    allow_outside_paths: bool = False
    # Keep only manifest rows with these views: names ("PA") or "frontal" / "lateral"; None = all rows.
    views: list[str] | None = Field(None, min_length=1)
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    split_seed: int = 0
    num_workers: int = Field(0, ge=0)
    cache_images: bool = True
    # Decode-once on-disk cache of resized images for raw manifests (medmodal/data/image_cache.py),
    # shared safely by processes; None = off. `medmodal prepare` is the other way to decode once.
    image_cache_dir: str | None = None
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    # Share of the training split used (label-efficiency / transfer experiments): a seeded
    # (split_seed) subset of the training studies; smaller fractions are subsets of larger ones.
    train_fraction: float = Field(1.0, gt=0, le=1)
    # Use this tokenizer (e.g. RUN/tokenizer.json of `medmodal pretrain`) instead of learning
    # one, so that a pretrained text encoder's word embeddings keep their meaning.
    tokenizer_path: str | None = None

    @field_validator("text_fields", "target_fields")
    @classmethod
    def _known_sections(cls, value: list[str]) -> list[str]:
        unknown = [f for f in value if f not in SECTION_FIELDS]
        if unknown:
            raise ValueError(f"unknown report section(s) {unknown}; sections are {list(SECTION_FIELDS)}")
        return value

    @field_validator("split_fractions")
    @classmethod
    def _fractions_sum_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(v < 0 for v in value) or abs(sum(value) - 1.0) > 1e-6:
            raise ValueError(f"train/val/test fractions must be >= 0 and sum to 1, got {value}")
        return value


# -------------------------------------------------------------------------- model
class PartConfig(_Section):
    """A model part built by name from the registry, with keyword arguments."""

    name: str
    kwargs: dict[str, Any] = {}
    pretrained_path: str | None = None  # local weights file; never downloaded


class HeadsConfig(_Section):
    """Which task heads the model has. Classification is the model's core task and always on."""

    classification: Literal[True] = True
    localization: bool = True
    generation: bool = True


class LocalizationConfig(_Section):
    """The dense localization head (``medmodal/models/localization.py``; docs/localization.md)."""

    # Output stride of the head's maps (cells of stride x stride pixels): 32 x 32 cells at 128 px for 4.
    # 4 with 32 channels was chosen on validation over 8 with 64 (docs/localization.md).
    stride: Literal[2, 4, 8, 16] = 4
    hidden_dim: int = Field(32, ge=8, le=1024)  # channels of the head's feature map
    # A detected box's score: its heatmap peak, or that peak times the classifier's probability
    # of the finding (a box of a finding the classifier rejects then ranks low).
    score: Literal["heatmap", "heatmap_x_probability"] = "heatmap"
    max_detections: int = Field(50, ge=1, le=100)  # boxes kept per study (COCO scores at most 100)
    min_score: float = Field(0.01, ge=0, lt=1)  # boxes scored below are dropped
    nms_iou: float = Field(0.5, gt=0, le=1)  # class-wise NMS: a weaker box overlapping more goes
    # Box-size maps: "shared" = one for all findings (CenterNet's class-agnostic size); "per_finding" =
    # one per finding, read at its own peaks and trained at its own centres (findings share centres here).
    size_maps: Literal["shared", "per_finding"] = "shared"
    # Dilation of each extra 3x3 conv at the end of the head's trunk (context for large boxes such as a
    # pneumothorax); [] = none (the default), [2, 4] = a 17 x 17-cell receptive field (docs/localization.md).
    dilations: list[Annotated[int, Field(ge=1, le=16)]] = Field(default_factory=list, max_length=4)
    # Classification evidence from this head (medmodal/models/peak_evidence.py): in eval mode the logit
    # of each finding with training boxes is mixed with its heatmap peak, Platt-scaled, the weight chosen
    # on validation when training ends (docs/diagnosis.md, round 7). Models without a box head ignore it.
    peak_evidence: bool = False


class ReportConditioningConfig(_Section):
    """Diagnosis-driven report generation (docs/reports.md)."""

    # "findings": the decoder reads the findings at every step (ground-truth labels under teacher
    # forcing, the classifier's predicted findings when generating); "none": it does not.
    mode: Literal["none", "findings"] = "findings"  # chosen on validation CE F1 (docs/reports.md)
    # When a finding counts as predicted: "val_f1" = probability >= the per-finding threshold with
    # the best F1 on the validation split (chosen at each validation epoch, kept in the
    # checkpoint), or one fixed probability for every finding.
    # "val_micro_f1": the thresholds with the best F1 pooled over all findings (the CE F1's
    # averaging) on the validation split, by coordinate ascent from the per-finding ones; a finding
    # may get a threshold above 1 (never stated) when stating it only costs pooled F1.
    threshold: Literal["val_f1", "val_micro_f1"] | Annotated[float, Field(gt=0, lt=1)] = "val_f1"
    # "generated": the decoder writes the report; "retrieved": the report of the training study
    # whose findings are nearest the predicted ones (fewest differing findings), ties broken by
    # the cosine of the model's joint vectors (medmodal/models/report_bank.py), filled from the best
    # checkpoint when training ends. The decoder still trains: its loss shapes the joint vector.
    reports: Literal["generated", "retrieved"] = "generated"
    bank_size: int = Field(20_000, ge=1, le=1_000_000)  # most training reports kept (the first ones)
    # How a retrieved report is chosen. "findings": the fewest findings differing from the predicted
    # ones (thresholded by ``threshold``). "expected_reading": the labeler's reading of each training
    # report is kept; from the classifier's probabilities the bank estimates how likely the study's
    # own report states each finding, and returns a report stating those above one threshold, chosen
    # on validation CE F1 (medmodal/models/report_bank.py, docs/reports.md).
    retrieve_by: Literal["findings", "expected_reading"] = "findings"

    @model_validator(mode="after")
    def _retrieval_needs_findings(self) -> ReportConditioningConfig:
        if self.reports == "retrieved" and self.mode != "findings":
            raise ValueError(
                "reports: 'retrieved' looks reports up by the predicted findings; it needs mode: findings"
            )
        if self.retrieve_by == "expected_reading" and self.reports != "retrieved":
            raise ValueError(
                "retrieve_by: 'expected_reading' chooses retrieved reports; it needs reports: retrieved"
            )
        return self


class WideConfig(_Section):
    """Wide (linear) pathways whose logits are added to the classification logits, trained jointly
    (wide & deep, Cheng et al. 2016; ``medmodal/models/wide.py``). Off by default."""

    pixels: int = Field(0, ge=0, le=256)  # side of the pooled image of the pixel pathway; 0 = off
    ngrams: bool = False  # a linear pathway on the bag of word uni + bigrams
    ngram_buckets: int = Field(16384, ge=0, le=1_048_576)  # hash slots of the bigrams (0 = unigrams)
    # How the pathways' linear maps are learnt: "sgd" = jointly with the deep parts, from zero;
    # "stacked" = fitted before training by L-BFGS logistic regression (C chosen on val) and frozen,
    # the training studies reading K-fold out-of-fold logits, per-label stacking weights on top
    # (docs/diagnosis.md, "Round 3"; medmodal/training/wide_stacking.py).
    fit: Literal["sgd", "stacked"] = "sgd"
    folds: int = Field(5, ge=2, le=20)  # K of the out-of-fold logits (fit: stacked)


class ModelConfig(_Section):
    """The multimodal model: encoders, fusion, heads (arXiv 2405.17459 built from parts)."""

    modalities: Literal["image", "text", "both"] = "both"
    # Image encoder chosen on the demo data's validation split (docs/diagnosis.md): one that keeps
    # position. ngram_bag / stacked were not better than bilstm_attention / gated there.
    image_encoder: PartConfig = Field(default_factory=lambda: PartConfig(name="coord_cnn"))
    text_encoder: PartConfig = Field(default_factory=lambda: PartConfig(name="bilstm_attention"))
    fusion: PartConfig = Field(default_factory=lambda: PartConfig(name="gated"))
    decoder: PartConfig = Field(default_factory=lambda: PartConfig(name="lstm"))
    embed_dim: int = Field(256, ge=8, le=4096)  # width of encoder outputs and the fused vector
    # Input channels of the image encoder. The data layer reads images as grayscale [B, 1, H, W]; with
    # more channels (3 for an encoder whose pretrained_path weights are RGB) it is repeated into each.
    image_channels: int = Field(1, ge=1, le=4)
    heads: HeadsConfig = Field(default_factory=HeadsConfig)
    wide: WideConfig = Field(default_factory=WideConfig)
    # Two-modality models: "head" = the head on the fused vector; "with_unimodal" = plus the image
    # and text auxiliary logits (late fusion in log-odds, the fusion head learning the rest).
    fused_logits: Literal["head", "with_unimodal"] = "head"
    localization: LocalizationConfig = Field(default_factory=LocalizationConfig)  # the box head's settings
    dropout: float = Field(0.1, ge=0, lt=1)
    # Probability, per training sample, of hiding one modality (replaced by the
    # learned placeholder), so the model learns to work with either missing.
    modality_dropout: float = Field(0.0, ge=0, le=1)
    # "joint": the fusion layer alone shapes the shared representation. "coordinated": in
    # addition, each modality's vector is projected into one space where a symmetric InfoNCE
    # term (train.loss_weights.alignment) pulls a study's image and report together (the
    # surveys' coordinated representation, CLIP-style, inside the supervised model).
    representation: Literal["joint", "coordinated"] = "joint"
    report_conditioning: ReportConditioningConfig = Field(default_factory=ReportConditioningConfig)

    @model_validator(mode="after")
    def _coordinated_needs_both(self) -> ModelConfig:
        if self.representation == "coordinated" and self.modalities != "both":
            raise ValueError("representation: 'coordinated' aligns two modalities; it needs modalities: both")
        return self


# ----------------------------------------------------------------------- training
class LossWeights(_Section):
    classification: float = Field(1.0, ge=0)
    localization: float = Field(1.0, ge=0)
    generation: float = Field(0.5, ge=0)
    # Auxiliary unimodal classification losses (counter modality competition).
    auxiliary: float = Field(0.3, ge=0)
    # Image-report InfoNCE of coordinated models (model.representation); unused by joint ones.
    alignment: float = Field(0.5, ge=0)


class DomainAdaptationConfig(_Section):
    """Adaptation to a new site (``medmodal.models.domain``; docs/domain-adaptation.md).

    ``target_sites``: their labels are never used. Their ``train``-split studies join training
    unlabeled (only the site loss of ``dann`` reads them; ``none`` leaves them out), their
    ``val`` studies are left out of validation, their ``test`` studies stay for evaluation.
    """

    method: Literal["none", "dann"] = "none"
    weight: float = Field(0.3, ge=0, le=10)  # largest gradient-reversal coefficient (lambda)
    schedule: Literal["dann", "constant"] = "dann"  # lambda ramp over training progress
    hidden_dim: int = Field(64, ge=4, le=4096)  # of the site classifier
    target_sites: list[str] = []


class TrainerConfig(_Section):
    """What every training run shares (supervised, pretraining, the VQA / segmentation tasks):
    AdamW with a one-cycle schedule (:mod:`medmodal.training.optim`) and where / how Lightning runs it
    (:func:`medmodal.training.engine.lightning_trainer`)."""

    epochs: int = Field(12, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    seed: int = 0
    gradient_clip: float = Field(1.0, ge=0)  # 0 = off
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    precision: str = "32-true"
    deterministic: bool = True
    log_every_n_steps: int = Field(10, ge=1)
    progress_bar: bool = True
    limit_train_batches: float | int | None = None  # for smoke runs


class TrainConfig(TrainerConfig):
    loss_weights: LossWeights = Field(default_factory=LossWeights)
    class_imbalance: Literal["none", "pos_weight", "focal"] = "pos_weight"
    focal_gamma: float = Field(2.0, ge=0)
    early_stopping_patience: int = Field(4, ge=0)  # 0 = off
    monitor: str = "val/auroc_macro"
    domain_adaptation: DomainAdaptationConfig = Field(default_factory=DomainAdaptationConfig)
    # Counter modality competition by slowing the dominant modality's encoder each step
    # (OGM; medmodal/training/modality_balance.py); two-modality models only.
    modality_balance: Literal["none", "ogm"] = "none"
    ogm_alpha: float = Field(0.5, gt=0, le=10)
    # Learning rate of the localization head (trained from scratch, dense) as a multiple of ``lr``;
    # 5 chosen on the demo's validation split (docs/localization.md).
    localization_lr_scale: float = Field(5.0, gt=0, le=100)
    # Wide pathways (model.wide): learning rate as a multiple of ``lr`` and their own weight decay.
    wide_lr_scale: float = Field(5.0, gt=0, le=100)
    wide_weight_decay: float = Field(0.1, ge=0)
    # Weight averaging: "ema" = validate, checkpoint and keep an exponential moving average of the
    # weights (Lightning's EMAWeightAveraging, torch.optim.swa_utils.AveragedModel) instead of the
    # last step's weights; "none" = the weights as trained.
    weight_averaging: Literal["none", "ema"] = "none"
    ema_decay: float = Field(0.99, gt=0, lt=1)
    # Dense localization loss (docs/localization.md): the CornerNet overlap that sets each centre
    # target's Gaussian radius (lower = wider), and the weight of an L1 loss on the log box size
    # (in cells) read at each true centre, added to the GIoU term (0 = off).
    localization_gaussian_overlap: float = Field(0.7, gt=0, lt=1)
    localization_log_size_weight: float = Field(0.0, ge=0, le=10)
    # Epochs of a second stage that fits a fresh localization head on the frozen encoders and fusion
    # of the best checkpoint, at ``lr * localization_lr_scale`` (medmodal/training/localization_refit.py;
    # docs/localization.md); 0 = off, the head stays as trained jointly.
    localization_refit_epochs: int = Field(0, ge=0, le=200)


# --------------------------------------------------------------------- evaluation
class EvaluateConfig(_Section):
    beam_size: int = Field(3, ge=1, le=16)
    max_generate_tokens: int = Field(80, ge=4, le=1024)
    threshold: float = Field(0.5, gt=0, lt=1)
    batch_size: int = Field(64, ge=1)
    # How the clinical-efficacy labeler counts an uncertain mention ("possible effusion").
    uncertain_as: Literal["positive", "negative"] = "positive"
    # Conflict flag (docs/explain.md): image-only and text-only probabilities of a finding on
    # opposite sides of ``threshold`` and at least this far apart.
    conflict_gap: float = Field(0.5, gt=0, le=1)
    # Where the unimodal views come from: the auxiliary unimodal heads, or the fused model
    # with the other modality replaced by its learned placeholder; "auto" = the auxiliary
    # heads when they were trained (loss_weights.auxiliary > 0), else the ablation.
    conflict_view: Literal["auto", "auxiliary", "ablation"] = "auto"


# ---------------------------------------------------------------------- pretraining
class PretrainConfig(_Section):
    """Contrastive image-report pretraining (``medmodal pretrain``; CLIP / ConVIRT, GLoRIA).

    The encoders are ``model.image_encoder`` / ``model.text_encoder`` at ``model.embed_dim``
    (so their weights load into the supervised model); epochs, batch size, lr come from ``train``.
    """

    text_fields: list[str] = ["findings", "impression"]  # the report the image is paired with
    max_text_tokens: int = Field(96, ge=4, le=1024)
    projection_dim: int = Field(128, ge=8, le=4096)
    temperature: float = Field(0.1, gt=0.001, le=1)  # initial softmax temperature
    learn_temperature: bool = True
    # GLoRIA local word-region alignment loss weight (0 = global InfoNCE only) and its
    # three temperatures (attention over regions, word aggregation, local logits).
    local_loss_weight: float = Field(0.0, ge=0)
    local_attention_temperature: float = Field(4.0, gt=0)
    local_word_temperature: float = Field(5.0, gt=0)
    local_logit_temperature: float = Field(10.0, gt=0)
    index: Literal["flat", "ivf", "hnsw"] = "flat"  # vector index of `medmodal search`

    @field_validator("text_fields")
    @classmethod
    def _known_sections(cls, value: list[str]) -> list[str]:
        return DataConfig._known_sections(value)


class BaselineConfig(_Section):
    """Simple scikit-learn baselines instead of the deep model (``medmodal baseline``, docs/baselines.md).

    Names are those of ``medmodal.models.available("baseline")``; ``kwargs`` maps a baseline's
    name to its settings (validated when the baseline is built), e.g. ``{tfidf_logreg: {ngram_max: 1}}``.
    """

    classifier: str | None = (
        None  # tfidf_logreg, pixel_logreg, linear_probe, late_fusion; None: the deep model
    )
    boxes: str | None = None  # mean_box
    report: str | None = None  # nearest_report, template_report
    kwargs: dict[str, dict[str, Any]] = {}


# --------------------------------------------------------------------------- root
class Config(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)

    @model_validator(mode="after")
    def _generated_reports_need_a_trained_decoder(self) -> Config:
        if (
            self.model.heads.generation
            and self.model.report_conditioning.reports == "generated"
            and self.train.loss_weights.generation == 0
        ):
            raise ValueError(
                "train.loss_weights.generation is 0, so the decoder that writes the reports "
                "(model.report_conditioning.reports: generated) would never train; give it a weight, "
                "retrieve the reports ('retrieved') or turn the head off (model.heads.generation: false)"
            )
        return self

    @model_validator(mode="after")
    def _modality_balance_needs_two_modalities(self) -> Config:
        if self.train.modality_balance != "none" and self.model.modalities != "both":
            raise ValueError(
                f"train.modality_balance: '{self.train.modality_balance}' balances two modalities; "
                f"model.modalities is '{self.model.modalities}'"
            )
        return self


def validation_report(
    err: ValidationError, heading: str, *, unknown_key: str | None = None, strip_value_error: bool = False
) -> str:
    """``heading`` and a line per error of ``err``: the dotted path of the field and what is wrong
    (``unknown_key`` for a key the model does not have, when given; without pydantic's "Value error, "
    prefix with ``strip_value_error``)."""
    lines = [heading]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(root)"
        msg = e["msg"].removeprefix("Value error, ") if strip_value_error else e["msg"]
        if unknown_key is not None and e["type"] == "extra_forbidden":
            msg = unknown_key
        lines.append(f"  {path}: {msg}")
    return "\n".join(lines)


def validated(
    model: type[ModelT],
    data: Any,
    what: str,
    source: str,
    *,
    error: type[ConfigError] = ConfigError,
    not_a_mapping: str = "the top level must be a mapping",
    unknown_key: str | None = None,
    strip_value_error: bool = False,
) -> ModelT:
    """``data`` (e.g. parsed YAML) validated into ``model``; else ``error``: "invalid ``what`` in
    ``source``" and each bad field (:func:`validation_report`)."""
    if not isinstance(data, dict):
        raise error(f"invalid {what} in {source}: {not_a_mapping}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        heading = f"invalid {what} in {source}:"
        report = validation_report(err, heading, unknown_key=unknown_key, strip_value_error=strip_value_error)
        raise error(report) from None


def config_from_dict(data: dict[str, Any] | None, source: str = "<dict>") -> Config:
    """Validate a plain dict (e.g. parsed YAML) into a :class:`Config`."""
    unknown_key = "unknown key (misspelt, or not a setting of this section)"
    return validated(Config, {} if data is None else data, "configuration", source, unknown_key=unknown_key)


def load_config(path: str | Path | None) -> Config:
    """Read and validate a YAML config; ``None`` gives the default config."""
    if path is None:
        return Config()
    path = Path(path)
    return config_from_dict(read_yaml(path, "config"), str(path))


def read_yaml(path: Path, what: str) -> Any:
    """The parsed YAML file ``path``; :class:`ConfigError` names it as a ``what`` file when it is
    missing, and says where the YAML is broken."""
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """A copy of ``config`` with dotted-path overrides, e.g. ``{"train.epochs": 3}``.

    Values are validated like the file's; ``None`` values are ignored (flag not given).
    """
    data = config.model_dump()
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            if key not in node or not isinstance(node[key], dict):
                raise ConfigError(f"override '{dotted}': no section '{key}'")
            node = node[key]
        if leaf not in node:
            raise ConfigError(f"override '{dotted}': unknown key '{leaf}'")
        node[leaf] = value
    return config_from_dict(data, "command-line overrides")


def config_yaml(config: Config) -> str:
    """The fully resolved config as YAML text (what the run actually used)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def save_config(config: Config, path: str | Path) -> None:
    """Write the fully resolved config as YAML (what the run actually used)."""
    Path(path).write_text(config_yaml(config))


def write_config_atomic(config: Config, path: Path) -> bool:
    """Write ``config`` as YAML atomically, and only if the file's text would change;
    returns whether it was written."""
    text = config_yaml(config)
    if path.is_file() and path.read_bytes() == text.encode():
        return False
    write_text_atomic(path, text)
    return True
