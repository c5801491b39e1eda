"""``medmodal export RUN --onnx OUT.onnx``: the classification + localization graph as ONNX.

What is exported: the forward pass of a trained :class:`~medmodal.models.multimodal.MultimodalModel`
without report generation. Inputs (B = batch, S = image size, L = ``max_text_tokens``)::

    image      float32 [B, 1, S, S]  normalised image (``StudyDataset`` preprocessing)
    has_image  bool    [B]
    text_ids   int64   [B, L]
    text_mask  bool    [B, L]
    has_text   bool    [B]

(an image-only model has only the image inputs, a text-only model only the text
inputs). Outputs, where the model has them::

    logits         [B, C]      fused class logits;  probabilities = sigmoid(logits)
    probabilities  [B, C]
    image_logits   [B, C]      auxiliary image-only head
    text_logits    [B, C]      auxiliary text-only head
    boxes          [B, C, 4]   normalised (x0, y0, x1, y1)
    box_heatmaps   [B, C, h, w]
    word_attention [B, L]

Report generation (beam search over a decoder) stays in PyTorch: its loop with a
data-dependent stopping point does not map onto one static graph, and it is not
where a hospital needs a portable runtime first. The ONNX runtime path in
``medmodal serve --runtime onnx`` therefore runs the graph above in onnxruntime
and, for models with a decoder, the report generation in PyTorch.

The exporter is PyTorch's TorchScript-based ``torch.onnx.export(..., dynamo=False)``:
it handles the BiLSTM's ``pack_padded_sequence`` that ``torch.export`` cannot trace
(data-dependent lengths). The graph is checked with ``onnx.checker`` and compared
with PyTorch on real preprocessed studies (:func:`parity_check`).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from medmodal.data.pipeline import build_dataset
from medmodal.models.multimodal import MultimodalModel
from medmodal.models.types import ModelOutput
from medmodal.training.loading import TrainedRun, load_trained

IMAGE_INPUTS = ("image", "has_image")
TEXT_INPUTS = ("text_ids", "text_mask", "has_text")
OUTPUT_ORDER = (
    "logits",
    "probabilities",
    "image_logits",
    "text_logits",
    "boxes",
    "box_heatmaps",
    "word_attention",
)
OPSET = 17


class InferenceGraph(nn.Module):
    """The exportable forward: named tensors in, the model's outputs as a tuple (see module docstring)."""

    def __init__(self, model: MultimodalModel):
        super().__init__()
        self.model = model.eval()
        self.input_names = list(input_names_for(model))
        probe = self._output_dict(self._dummy_inputs(batch=1, image_size=32, text_len=4))
        self.output_names = [name for name in OUTPUT_ORDER if probe.get(name) is not None]
        self.eval()

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        outputs = self._output_dict(dict(zip(self.input_names, inputs)))
        # output_names are the outputs this model produces (not None in __init__'s probe)
        return tuple(cast(Tensor, outputs[name]) for name in self.output_names)

    def _output_dict(self, batch: dict[str, Tensor]) -> dict[str, Tensor | None]:
        """The model's forward, with every image row encoded (``MultimodalModel.encode_images``
        encodes only present rows through a data-dependent branch a static graph cannot hold;
        in eval mode rows are independent, and missing rows are replaced by the placeholder)."""
        model = self.model
        image = text = None
        if model.image_encoder is not None:
            encoded = model.image_encoder(model.encoder_input(batch["image"]))  # model.image_channels
            assert model.image_placeholder is not None  # built with the image encoder (MultimodalModel)
            image = model.image_placeholder.fill(encoded, batch["has_image"])
        if model.text_encoder is not None:
            assert model.text_placeholder is not None  # built with the text encoder (MultimodalModel)
            text = model.text_placeholder.fill(
                model.text_encoder(batch["text_ids"], batch["text_mask"]), batch["has_text"]
            )
        vector, fusion_output = model.fuse(image, text)
        # the wide pathways' (or with_unimodal's) logits are part of the model's classification
        image_logits, text_logits, added = model.unimodal_logits(
            batch,
            image,
            text,
            batch["has_image"] if image is not None else None,
            batch["has_text"] if text is not None else None,
        )
        peaks = boxes = heatmaps = None
        if model.localizer is not None:
            assert image is not None  # a localization head is built only with an image encoder
            localization = model.localizer(image.grid, vector, batch["image"])
            boxes, heatmaps = localization.boxes, localization.heatmaps
            peaks = localization.peaks if model.peak_evidence is not None else None
        logits = model.classification_logits(  # includes the calibration
            vector, fusion_output, added, peaks, batch["has_image"] if image is not None else None
        )
        return {
            "logits": logits,
            "probabilities": torch.sigmoid(logits) if logits is not None else None,
            "image_logits": image_logits,
            "text_logits": text_logits,
            "boxes": boxes,
            "box_heatmaps": heatmaps,
            "word_attention": text.attention if text is not None else None,
        }

    def _dummy_inputs(self, batch: int, image_size: int, text_len: int) -> dict[str, Tensor]:
        ids = torch.ones(batch, text_len, dtype=torch.long)
        ids[:, -1] = 0
        mask = ids != 0
        return {
            "image": torch.zeros(batch, 1, image_size, image_size),
            "has_image": torch.ones(batch, dtype=torch.bool),
            "text_ids": ids,
            "text_mask": mask,
            "has_text": torch.ones(batch, dtype=torch.bool),
        }


def input_names_for(model: MultimodalModel) -> tuple[str, ...]:
    names: tuple[str, ...] = ()
    if model.image_encoder is not None:
        names += IMAGE_INPUTS
    if model.text_encoder is not None:
        names += TEXT_INPUTS
    return names


# ---------------------------------------------------------------------- export
@dataclass
class ExportResult:
    path: Path
    inputs: list[str]
    outputs: list[str]
    max_abs_diff: dict[str, float]
    n_parity_studies: int

    def summary(self) -> dict[str, Any]:
        return {
            "onnx": str(self.path),
            "inputs": self.inputs,
            "outputs": self.outputs,
            "parity_max_abs_diff": self.max_abs_diff,
            "parity_studies": self.n_parity_studies,
            "generation": "stays in PyTorch (not part of the ONNX graph)",
        }


def export_onnx(
    run_dir: str | Path, out: str | Path, *, tolerance: float = 1e-4, parity_studies: int = 8
) -> ExportResult:
    """Export ``run_dir``'s model to ``out`` and check it against PyTorch.

    Parity inputs are real studies of the run's validation split preprocessed exactly as
    for training (falling back to synthetic tensors when the dataset is gone), half of
    them with the text or image hidden so the placeholder paths are checked too.

    Raises:
        ValueError: the ONNX outputs differ from PyTorch by more than ``tolerance``.
    """
    import onnx

    trained = load_trained(run_dir)
    graph = InferenceGraph(trained.model)
    batch = parity_batch(trained, parity_studies)
    inputs = tuple(batch[name] for name in graph.input_names)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    dynamic = {name: {0: "batch"} for name in graph.input_names + graph.output_names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about Python bools in shape code
        torch.onnx.export(  # TrainingMode.EVAL (the default): dropout off, BatchNorm running statistics
            graph,
            inputs,
            str(out),
            input_names=graph.input_names,
            output_names=graph.output_names,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )
    onnx.checker.check_model(onnx.load(str(out)))
    diffs = parity_check(graph, out, batch)
    worst = max(diffs.values())
    if worst > tolerance:
        raise ValueError(
            f"{out}: ONNX outputs differ from PyTorch by up to {worst:.3g} (> {tolerance}): {diffs}"
        )
    metadata = {
        "run": str(trained.run.root),
        "inputs": graph.input_names,
        "outputs": graph.output_names,
        "image_size": trained.config.data.image_size,
        "max_text_tokens": trained.config.data.max_text_tokens,
        "parity_max_abs_diff": diffs,
        "calibrated": trained.calibrated,
    }
    out.with_suffix(".json").write_text(json.dumps(metadata, indent=2) + "\n")
    return ExportResult(
        out, graph.input_names, graph.output_names, diffs, int(batch[graph.input_names[0]].shape[0])
    )


def parity_batch(trained: TrainedRun, n: int) -> dict[str, Tensor]:
    """Up to ``n`` preprocessed validation studies (rows alternately with image or text hidden)."""
    from torch.utils.data import default_collate

    cfg = trained.config
    studies = []
    try:
        data = (
            json.loads(trained.run.data_summary.read_text()).get("file")
            if trained.run.data_summary.exists()
            else None
        )
        if data and Path(data).exists():
            manifest = trained.read_data(data)
            studies = (manifest.split("val") or manifest.split("test") or manifest.studies)[:n]
    except (OSError, ValueError, KeyError):  # a moved / changed dataset: fall back to synthetic inputs below
        studies = []
    if studies:
        dataset = build_dataset(studies, trained.tokenizer, trained.labels, cfg, train=False)
        batch = default_collate([dataset[i] for i in range(len(dataset))])
    else:
        generator = torch.Generator().manual_seed(0)
        size, length = cfg.data.image_size, cfg.data.max_text_tokens
        ids = torch.randint(4, trained.tokenizer.vocab_size, (n, length), generator=generator)
        lengths = torch.randint(1, length + 1, (n,), generator=generator)
        mask = torch.arange(length)[None] < lengths[:, None]
        batch = {
            "image": torch.randn(n, 1, size, size, generator=generator),
            "has_image": torch.ones(n, dtype=torch.bool),
            "text_ids": torch.where(mask, ids, torch.full_like(ids, trained.tokenizer.pad_id)),
            "text_mask": mask,
            "has_text": torch.ones(n, dtype=torch.bool),
        }
    rows = torch.arange(batch["has_image"].shape[0])
    batch["has_image"] = batch["has_image"] & (rows % 4 != 1)
    batch["has_text"] = batch["has_text"] & (rows % 4 != 3)
    return {k: v for k, v in batch.items() if torch.is_tensor(v)}


def parity_check(graph: InferenceGraph, onnx_path: Path, batch: dict[str, Tensor]) -> dict[str, float]:
    """Max absolute difference per output between the model's own forward in PyTorch (not the
    export wrapper: a part the wrapper left out shows) and onnxruntime, over ``batch`` as a whole
    and over its first row alone (the service predicts one study at a time)."""
    # torch.onnx.export restores the wrapper's original training flag on every submodule
    # afterwards; the comparison must run in eval mode like the exported graph.
    graph.eval()
    session = OnnxSession(onnx_path)
    diffs = {name: 0.0 for name in graph.output_names}
    for rows in (slice(None), slice(0, 1)):
        inputs = {name: batch[name][rows] for name in graph.input_names}
        with torch.no_grad():
            expected = model_outputs(graph.model, inputs)
        got = session.run(inputs)
        for name in graph.output_names:
            want = expected.get(name)
            if want is None:  # the graph has an output the model's forward lacks
                diffs[name] = float("inf")
            elif want.numel():
                diffs[name] = max(diffs[name], float(np.max(np.abs(got[name] - want.numpy()))))
    return diffs


def model_outputs(model: MultimodalModel, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
    """The exported outputs as the model's forward (eval mode) gives them for ``inputs``."""
    out = model.eval()(dict(inputs))
    outputs = {
        "logits": out.logits,
        "probabilities": torch.sigmoid(out.logits) if out.logits is not None else None,
        "image_logits": out.image_logits,
        "text_logits": out.text_logits,
        "boxes": out.boxes,
        "box_heatmaps": out.box_heatmaps,
        "word_attention": out.word_attention,
    }
    return {name: value for name, value in outputs.items() if value is not None}


# --------------------------------------------------------------------- runtime
class OnnxSession:
    """An onnxruntime session fed with torch tensors / numpy arrays by input name."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        feed = {}
        for name in self.input_names:
            value = batch[name]
            feed[name] = value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)
        return dict(zip(self.output_names, self.session.run(self.output_names, feed)))


class OnnxRuntimeModel:
    """Stands in for the PyTorch model inside :class:`~medmodal.serving.predictor.Predictor`:
    ``model(batch)`` runs the ONNX graph in onnxruntime; ``generate`` (reports) and
    ``parameters`` (device lookup) go to the PyTorch model."""

    def __init__(self, session: OnnxSession, torch_model: MultimodalModel):
        self.session = session
        self.torch_model = torch_model

    def __call__(self, batch: dict[str, Any]) -> ModelOutput:
        outputs = {k: torch.from_numpy(v) for k, v in self.session.run(batch).items()}
        return ModelOutput(
            logits=outputs.get("logits"),
            image_logits=outputs.get("image_logits"),
            text_logits=outputs.get("text_logits"),
            boxes=outputs.get("boxes"),
            box_heatmaps=outputs.get("box_heatmaps"),
            word_attention=outputs.get("word_attention"),
        )

    def generate(self, *args, **kwargs):
        return self.torch_model.generate(*args, **kwargs)

    def parameters(self):
        return self.torch_model.parameters()

    def __getattr__(self, name: str):  # decoder, modalities, ... for code that inspects the model
        return getattr(self.torch_model, name)


def onnx_trained_run(trained: TrainedRun, onnx_path: str | Path) -> TrainedRun:
    """``trained`` with its model's forward served by onnxruntime from ``onnx_path``."""
    session = OnnxSession(onnx_path)
    expected = list(input_names_for(trained.model))
    if session.input_names != expected:
        raise ValueError(
            f"{onnx_path}: inputs {session.input_names} do not match this run's model {expected}"
        )
    # a duck-typed stand-in: what Predictor calls (__call__, generate, parameters), the rest forwarded
    return replace(trained, model=cast(MultimodalModel, OnnxRuntimeModel(session, trained.model)))
