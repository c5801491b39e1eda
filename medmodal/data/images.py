"""Read PNG, JPEG and DICOM images as float32 ``[H, W]`` arrays in ``[0, 1]``.

Everything the toolkit reads goes through :func:`read_image` (or :func:`load_image`,
its pixels only); the manifest check uses the cheaper :func:`check_image`, and box
normalisation can use :func:`image_size` (header only).

Intensity rules
---------------
* 8-bit PNG / JPEG: ``value / 255``. Colour images are converted to grayscale
  (PIL's ITU-R 601-2 luma). Palette images go through their palette.
* Transparency (RGBA, LA, palette with a transparent colour): composited over
  black, i.e. luma x alpha, so a transparent area reads as "no signal" like the
  zero image of a missing study (the RGBA NIH exports have alpha 255 throughout
  and are unchanged).
* 16-bit (and 32-bit integer / float) PNG / TIFF: per-image min-max scaling.
  Radiographs exported as 16-bit PNG often hold 10-14-bit data, which a fixed
  ``/ 65535`` would turn almost black.
* DICOM (pydicom): the modality LUT (Rescale Slope / Intercept or a Modality LUT
  Sequence) is applied, then the VOI LUT (VOI LUT Sequence, else Window Center /
  Width with the VOI LUT Function), both with pydicom. With a VOI transform the
  window's output range maps to ``[0, 1]``; without one the image is min-max
  scaled. MONOCHROME1 (white = low values) is inverted so that, as in MONOCHROME2,
  bright means dense. Multi-frame files: the first frame. Colour DICOM: grayscale.

Orientation and size
--------------------
The EXIF orientation tag (JPEG, TIFF, PNG ``eXIf`` before the image data) is applied:
images are read as a viewer displays them, and pixel coordinates, manifest boxes
and :func:`image_size` all refer to that displayed image (width and height
swapped for a 90-degree orientation). DICOM has no such tag.

``read_image(path, reduce_to=S)`` lets a large JPEG decode at 1/2, 1/4 or 1/8
scale in the decoder itself (Pillow's ``draft``, DCT scaling), never below S on
either side: a 2373 x 2373 radiograph bound for a 128 x 128 model input decodes at
1/8 scale. The returned ``size`` is still the full-scale size, which box
normalisation needs. Other formats decode in full.

Images far from square are not padded here; :mod:`medmodal.data.dataset` resizes
each axis to the model input (aspect not kept), and boxes stay valid because they
are normalised per axis.

Hostile files
-------------
Every reader takes ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`, Pillow's
own decompression-bomb limit, which stays on) and checks it before anything is
decoded: PNG / JPEG / TIFF by the header Pillow reads lazily; DICOM by Rows x
Columns, and for compressed DICOM also by the first frame's own header
(:mod:`medmodal.data.codestreams`), which must agree with Rows / Columns (a file
whose header says 64 x 64 but whose JPEG frame is 40,000 x 40,000 is refused
unread). A Deflated Explicit VR DICOM is inflated once, bounded, before pydicom
reads it. Only PNG, JPEG and TIFF go to Pillow (formats such as EPS would run an
external program). A 12-bit JPEG DICOM without a 12-bit decoder (pylibjpeg-libjpeg
or GDCM) is refused with that reason instead of a decoder traceback; pydicom's
per-plugin failure tracebacks are kept out of the logs (the failure itself is in
the :class:`ImageReadError`).
"""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pydicom
from PIL import ExifTags, Image, UnidentifiedImageError
from pydicom.encaps import get_frame
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi_lut,
    get_decoder,
    pixel_array,
)
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEGTransferSyntaxes

from medmodal.data.codestreams import frame_header
from medmodal.errors import DataError

DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})
_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float64)  # same as PIL's convert("L")

PIL_FORMATS = ("PNG", "JPEG", "TIFF")  # what Pillow may open; EPS etc. would run external code
# Pillow's default decompression-bomb limit (about 9459 x 9459): radiographs and mammograms are far below.
DEFAULT_MAX_PIXELS = 89_478_485
_DEFLATE_BYTES_PER_PIXEL = 8  # bound of an inflated DICOM dataset: 8 bytes per allowed pixel
_DEFLATE_SLACK_BYTES = 4 * 1024 * 1024  # + headers, overlays, private tags


class _NoDecoderTracebacks(logging.Filter):
    """Drop pydicom's per-plugin ``LOGGER.exception`` records; the failure is raised and reported anyway."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None


logging.getLogger("pydicom.pixels.decoders.base").addFilter(_NoDecoderTracebacks())


class ImageReadError(DataError):
    """An image file that cannot be read; ``path`` names the file, ``reason`` says why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(str(path), reason)  # both in args, so the error pickles across workers
        self.path = str(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot read image {self.path}: {self.reason}"


# ---------------------------------------------------------------------- format
def is_dicom(path: str | os.PathLike) -> bool:
    """True for a DICOM file: a DICOM suffix, or the ``DICM`` marker at byte 128."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


# ---------------------------------------------------------------------- public
class DecodedImage(NamedTuple):
    """A decoded image and the full-scale size that pixel coordinates (boxes) refer to."""

    pixels: np.ndarray  # float32 [h, w] in [0, 1]; smaller than `size` only with reduce_to
    size: tuple[int, int]  # (H, W) at full scale, as displayed (EXIF orientation applied)


def read_image(
    path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS, reduce_to: int | None = None
) -> DecodedImage:
    """Decode an image file.

    Args:
        path: PNG, JPEG, TIFF or DICOM file.
        max_pixels: refuse an image of more pixels (height x width), checked from
            the header before decoding.
        reduce_to: the side the caller will resize to; a JPEG may then decode at a
            reduced scale whose sides stay >= ``reduce_to``. None: full scale.

    Returns:
        the pixels (float32 ``[h, w]`` in ``[0, 1]``, see the module docstring for the
        intensity rules) and the full-scale ``(H, W)``.

    Raises:
        ImageReadError: file missing, not an image, too large, truncated or corrupt,
            DICOM without pixel data or with a transfer syntax no installed plugin decodes.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file not found")
    try:
        if is_dicom(path):
            pixels = _load_dicom(path, max_pixels)
            decoded = DecodedImage(pixels, pixels.shape[:2])
        else:
            decoded = _load_pil(path, max_pixels, reduce_to)
    except ImageReadError:
        raise
    except Exception as err:  # any decoder failure becomes one error type naming the file
        raise ImageReadError(path, _describe(err)) from err
    if decoded.pixels.ndim != 2 or decoded.pixels.size == 0:
        raise ImageReadError(path, f"decoded to an array of shape {decoded.pixels.shape}, expected [H, W]")
    return decoded


ImageSource = str | os.PathLike | np.ndarray | Image.Image | pydicom.Dataset


def decode_image(
    source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS, reduce_to: int | None = None
) -> DecodedImage:
    """:func:`read_image` for a file path, or the same rules for an image already in memory.

    * ``pydicom.Dataset``: the checks of a DICOM file (pixel data present, Rows x Columns within
      ``max_pixels``, decoder and first-frame header of compressed data), then its LUTs.
    * Pillow image: the pixel budget, EXIF orientation and intensity rules of a PNG / JPEG file;
      an image Pillow opened from a file of another format than PNG / JPEG / TIFF is refused.
    * numpy array ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA): the
      values of an image file with those pixels: ``uint8`` as an 8-bit PNG (``/ 255``, colour to
      luma); a 2-D array of another integer or float type min-max scaled like a 16-bit PNG or float
      TIFF.

    So an array, the Pillow image made from it and a PNG written from it decode to the same pixels.

    Raises:
        ImageReadError: as :func:`read_image`; for in-memory input the "path" is a description.
    """
    if isinstance(source, (str, os.PathLike)):
        return read_image(source, max_pixels=max_pixels, reduce_to=reduce_to)
    if isinstance(source, pydicom.Dataset):
        name = str(getattr(source, "filename", None) or "<DICOM dataset>")
        return _decoded_in_memory(name, lambda: _dicom_from_memory(name, source, max_pixels))
    if isinstance(source, Image.Image):
        return _decoded_in_memory("<PIL image>", lambda: _pil_from_memory(source, max_pixels, reduce_to))
    if isinstance(source, np.ndarray):
        return _decoded_in_memory("<array>", lambda: _array_from_memory(source, max_pixels))
    raise TypeError(
        f"an image is a path, numpy array, PIL image or pydicom Dataset, not {type(source).__name__}"
    )


def _decoded_in_memory(name: str, decode) -> DecodedImage:
    """``decode()`` with decoder failures as :class:`ImageReadError` and the ``[H, W]`` check of files."""
    try:
        decoded = decode()
    except ImageReadError:
        raise
    except Exception as err:
        raise ImageReadError(name, _describe(err)) from err
    if decoded.pixels.ndim != 2 or decoded.pixels.size == 0:
        raise ImageReadError(name, f"decoded to an array of shape {decoded.pixels.shape}, expected [H, W]")
    return decoded


def _dicom_from_memory(name: str, ds: pydicom.Dataset, max_pixels: int) -> DecodedImage:
    _check_dicom_dataset(name, ds, max_pixels)
    pixels = _dicom_to_unit(ds)
    return DecodedImage(pixels, pixels.shape[:2])


def _pil_from_memory(img: Image.Image, max_pixels: int, reduce_to: int | None) -> DecodedImage:
    if img.format is not None and img.format not in PIL_FORMATS:
        raise ImageReadError(
            "<PIL image>", f"format {img.format} is not read (only {', '.join(PIL_FORMATS)})"
        )
    width, height = img.size
    check_pixel_budget("<PIL image>", height, width, max_pixels)
    return _decode_pil("<PIL image>", img, reduce_to)


def _array_from_memory(array: np.ndarray, max_pixels: int) -> DecodedImage:
    name = "<array>"
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageReadError(name, f"shape {array.shape}: expected [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]")
    check_pixel_budget(name, array.shape[0], array.shape[1], max_pixels)
    if array.dtype == np.uint8:  # through Pillow, so the luma of colour arrays is that of an RGB PNG
        return DecodedImage(
            _pil_to_unit_gray(name, Image.fromarray(np.ascontiguousarray(array))), array.shape[:2]
        )
    if array.ndim == 3:
        raise ImageReadError(name, f"a colour array must be uint8, not {array.dtype}")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ImageReadError(name, f"unsupported pixel type {array.dtype}")
    values = np.asarray(array, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ImageReadError(name, "the array holds NaN or infinite values")
    return DecodedImage(_min_max_scale(values), array.shape[:2])


def load_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The full-scale pixels of :func:`read_image`: float32 ``[H, W]`` in ``[0, 1]``."""
    return read_image(path, max_pixels=max_pixels).pixels


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(H, W)`` of the stored image, read from the header only (no pixel decoding)."""
    path = Path(path)
    try:
        if is_dicom(path):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return int(ds.Rows), int(ds.Columns)
        with Image.open(path, formats=PIL_FORMATS) as img:
            return _displayed_size(img)
    except Exception as err:
        raise ImageReadError(path, _describe(err)) from err


def check_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Cheap full check that ``path`` is a readable image; returns its ``(H, W)``.

    Fast enough for thousands of files, while still reading every byte:
    PNG chunks are CRC-checked (``Image.verify``); JPEGs are decoded at 1/8
    scale (DCT scaling), which catches truncation; DICOM is parsed, must carry
    pixel data, uncompressed pixel data must be as long as Rows x Columns x
    frames require, and compressed pixel data must have an installed decoder
    for its transfer syntax and bit depth, and a first frame whose own header
    agrees with Rows / Columns. TIFF is decoded in full. Images of more than
    ``max_pixels`` pixels are refused from the header.

    Raises:
        ImageReadError: naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file not found")
    try:
        return _check_dicom(path, max_pixels) if is_dicom(path) else _check_pil(path, max_pixels)
    except ImageReadError:
        raise
    except Exception as err:
        raise ImageReadError(path, _describe(err)) from err


def check_pixel_budget(path: str | os.PathLike, height: int, width: int, max_pixels: int) -> None:
    """Raise :class:`ImageReadError` for an empty size or one of more than ``max_pixels`` pixels."""
    if height <= 0 or width <= 0:
        raise ImageReadError(path, f"empty image size {width} x {height}")
    if height * width > max_pixels:
        raise ImageReadError(
            path,
            f"image is {width} x {height} = {height * width:,} pixels, more than the limit of {max_pixels:,}",
        )


# ------------------------------------------------------------------------- PIL
def _open_pil(path: Path, max_pixels: int) -> Image.Image:
    """Pillow image of an allowed format, header read and size checked, pixels not yet decoded."""
    img = Image.open(path, formats=PIL_FORMATS)
    width, height = img.size
    try:
        check_pixel_budget(path, height, width, max_pixels)
    except ImageReadError:
        img.close()
        raise
    return img


# EXIF orientation -> the transpose that shows the image upright (as in ImageOps.exif_transpose)
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations that turn the image by 90 degrees
_EIGHT_BIT_MODES = frozenset({"L", "P", "1", "RGB", "CMYK", "YCbCr", "RGBX"})
_ALPHA_MODES = frozenset({"LA", "RGBA", "PA", "La", "RGBa"})


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1 = upright) from the header only.

    PNG: only an ``eXIf`` chunk before the image data counts, because Pillow's
    ``getexif()`` would decode the whole image to look for a later one.
    """
    if img.format == "TIFF":
        return int(img.getexif().get(ExifTags.Base.Orientation, 1) or 1)
    raw = img.info.get("exif")
    if not raw:
        return 1
    exif = Image.Exif()
    exif.load(raw)
    return int(exif.get(ExifTags.Base.Orientation, 1) or 1)


def _displayed_size(img: Image.Image) -> tuple[int, int]:
    """``(H, W)`` after the EXIF orientation, from the header (no decoding)."""
    width, height = img.size
    if _orientation(img) in _SWAPPING_ORIENTATIONS:
        return width, height
    return height, width


def _load_pil(path: Path, max_pixels: int, reduce_to: int | None = None) -> DecodedImage:
    with _open_pil(path, max_pixels) as img:
        return _decode_pil(path, img, reduce_to)


def _decode_pil(name: str | os.PathLike, img: Image.Image, reduce_to: int | None) -> DecodedImage:
    """An opened (size-checked) Pillow image -> upright unit-gray pixels and the displayed size."""
    size = _displayed_size(img)
    orientation = _orientation(img)
    if reduce_to and img.format == "JPEG":  # a no-op once the image is loaded
        img.draft("L", (reduce_to, reduce_to))  # DCT scaling: sides stay >= reduce_to
    img.load()
    upright = img.transpose(_UPRIGHT[orientation]) if orientation in _UPRIGHT else img
    return DecodedImage(_pil_to_unit_gray(name, upright), size)


def _pil_to_unit_gray(path: str | os.PathLike, img: Image.Image) -> np.ndarray:
    """A Pillow image -> float32 ``[H, W]`` in [0, 1] (rules in the module docstring)."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in _ALPHA_MODES:
        gray_alpha = np.asarray(img.convert("LA"), dtype=np.float32)
        return gray_alpha[..., 0] * gray_alpha[..., 1] / np.float32(255.0 * 255.0)
    if img.mode in _EIGHT_BIT_MODES:
        return np.asarray(img.convert("L"), dtype=np.float32) / np.float32(255.0)
    if img.mode.startswith("I") or img.mode == "F":  # I;16, I;16B, I (32-bit), F (float)
        return _min_max_scale(np.asarray(img, dtype=np.float64))
    raise ImageReadError(path, f"unsupported image mode {img.mode!r}")


def _check_pil(path: Path, max_pixels: int) -> tuple[int, int]:
    with _open_pil(path, max_pixels) as img:
        width, height = img.size
        displayed = _displayed_size(img)
        if img.format == "PNG":
            img.verify()
        elif img.format == "JPEG":
            img.draft("L", (max(1, width // 8), max(1, height // 8)))
            img.load()
        else:
            img.load()
    return displayed


# ----------------------------------------------------------------------- DICOM
def _pixel_keyword(ds: pydicom.Dataset) -> str | None:
    return next((k for k in _PIXEL_DATA_KEYWORDS if k in ds), None)


def _read_dicom(path: Path, max_pixels: int) -> pydicom.Dataset:
    """``dcmread``, after checking that a deflated dataset inflates to a bounded size."""
    meta = read_file_meta_info(path)
    if meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        limit = max_pixels * _DEFLATE_BYTES_PER_PIXEL + _DEFLATE_SLACK_BYTES
        start = 132 + 12 + int(meta.get("FileMetaInformationGroupLength", 0))
        _check_inflated_size(path, start, limit)
    return pydicom.dcmread(path)


def _check_inflated_size(path: Path, start: int, limit: int) -> None:
    """Inflate the deflated dataset from byte ``start`` in chunks, keeping none; refuse above ``limit``."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    with open(path, "rb") as f:
        f.seek(start)
        while chunk := f.read(1 << 20):
            while chunk:
                total += len(inflater.decompress(chunk, 1 << 22))
                if total > limit:
                    raise ImageReadError(path, f"deflated DICOM inflates to more than {limit:,} bytes")
                chunk = inflater.unconsumed_tail


def _checked_dicom(path: Path, max_pixels: int) -> tuple[pydicom.Dataset, int, int]:
    """The dataset, Rows and Columns, once pixel data, size, decoder and first frame are checked."""
    ds = _read_dicom(path, max_pixels)
    rows, columns = _check_dicom_dataset(path, ds, max_pixels)
    return ds, rows, columns


def _check_dicom_dataset(path: str | os.PathLike, ds: pydicom.Dataset, max_pixels: int) -> tuple[int, int]:
    """Rows and Columns of a parsed dataset, once pixel data, size, decoder and first frame are checked."""
    keyword = _pixel_keyword(ds)
    if keyword is None:
        raise ImageReadError(path, "DICOM file has no pixel data")
    if "Rows" not in ds or "Columns" not in ds:
        raise ImageReadError(path, "DICOM file has no Rows / Columns")
    rows, columns = int(ds.Rows or 0), int(ds.Columns or 0)
    check_pixel_budget(path, rows, columns, max_pixels)
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None and syntax.is_compressed:
        _check_compressed_frame(path, ds, syntax, rows, columns)
    elif keyword == "PixelData":
        expected = get_expected_length(ds, unit="bytes")
        actual = len(ds.PixelData)
        if actual < expected:
            raise ImageReadError(path, f"pixel data truncated: {actual} of {expected} bytes")
    return rows, columns


def _check_compressed_frame(
    path: str | os.PathLike, ds: pydicom.Dataset, syntax: pydicom.uid.UID, rows: int, columns: int
):
    """Decoder installed; the first frame's own header (JPEG family) agrees with Rows / Columns."""
    decoder = get_decoder(syntax)
    if not decoder.is_available:
        raise ImageReadError(
            path, f"no installed decoder for transfer syntax {syntax.name} (e.g. pip install pylibjpeg)"
        )
    if syntax == pydicom.uid.RLELossless:  # RLE has no frame header; its decoder sizes by Rows / Columns
        return
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    header = frame_header(get_frame(ds.PixelData, 0, number_of_frames=frames))
    if header is None:
        raise ImageReadError(path, f"the first {syntax.name} frame has no readable frame header")
    if (header.height, header.width) != (rows, columns):
        raise ImageReadError(
            path,
            f"the compressed frame is {header.width} x {header.height} pixels but Rows / Columns say "
            f"{columns} x {rows}",
        )
    if (
        syntax in JPEGTransferSyntaxes
        and header.precision > 8
        and set(decoder.available_plugins) <= {"pillow"}
    ):
        raise ImageReadError(
            path,
            f"{header.precision}-bit {syntax.name} needs a decoder Pillow does not provide "
            "(pip install pylibjpeg pylibjpeg-libjpeg, or python-gdcm)",
        )


def _load_dicom(path: Path, max_pixels: int) -> np.ndarray:
    ds, _, _ = _checked_dicom(path, max_pixels)
    return _dicom_to_unit(ds)


def _dicom_to_unit(ds: pydicom.Dataset) -> np.ndarray:
    """A checked dataset's first frame -> float32 ``[H, W]`` in [0, 1] (rules in the module docstring)."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    arr = pixel_array(ds, index=0) if frames > 1 else ds.pixel_array
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        return _rgb_to_unit_gray(rgb, bits=8 * rgb.dtype.itemsize)
    if int(ds.get("SamplesPerPixel", 1)) > 1:  # colour; pydicom has converted YBR to RGB
        return _rgb_to_unit_gray(arr, bits=int(ds.get("BitsStored", 8)))
    return _grayscale_dicom_to_unit(arr, ds, invert=photometric == "MONOCHROME1")


def _rgb_to_unit_gray(rgb: np.ndarray, bits: int) -> np.ndarray:
    """``[H, W, 3]`` RGB of ``bits`` bits -> float32 ``[H, W]`` luma in [0, 1]."""
    gray = rgb[..., :3].astype(np.float64) @ _LUMA_WEIGHTS
    return np.clip(gray / (2**bits - 1), 0.0, 1.0).astype(np.float32)


def _grayscale_dicom_to_unit(arr: np.ndarray, ds: pydicom.Dataset, invert: bool) -> np.ndarray:
    """Stored values -> modality LUT -> VOI LUT -> ``[0, 1]`` (inverted for MONOCHROME1)."""
    values = apply_modality_lut(arr, ds)
    if _has_voi(ds):
        low, high = _voi_output_range(ds)
        windowed = apply_voi_lut(values, ds, index=0)
        unit = (np.asarray(windowed, dtype=np.float64) - low) / max(high - low, 1e-12)
        unit = np.clip(unit, 0.0, 1.0)
    else:
        unit = _min_max_scale(np.asarray(values, dtype=np.float64))
    if invert:
        unit = 1.0 - unit
    return unit.astype(np.float32)


def _has_voi(ds: pydicom.Dataset) -> bool:
    if ds.get("VOILUTSequence"):
        return True
    return "WindowCenter" in ds and "WindowWidth" in ds and ds.WindowWidth not in (None, "")


def _voi_output_range(ds: pydicom.Dataset) -> tuple[float, float]:
    """The range pydicom's VOI transform maps into, found by pushing extreme inputs through it.

    Windowing maps into ``[y_min, y_max]`` that depend on Bits Stored, Pixel
    Representation and rescale; a VOI LUT into its table's values. Probing with
    values below and above any window gives the two ends without re-deriving those
    rules here.
    """
    probe = np.array([-(2.0**40), 2.0**40], dtype=np.float64)
    if ds.get("VOILUTSequence"):
        probe = np.array([np.iinfo(np.int32).min, np.iinfo(np.int32).max], dtype=np.int64)
    ends = np.asarray(apply_voi_lut(probe, ds, index=0), dtype=np.float64)
    return float(ends.min()), float(ends.max())


def _check_dicom(path: Path, max_pixels: int) -> tuple[int, int]:
    _, rows, columns = _checked_dicom(path, max_pixels)
    return rows, columns


# ---------------------------------------------------------------------- helpers
def _min_max_scale(values: np.ndarray) -> np.ndarray:
    """Linear map of ``values`` onto ``[0, 1]``; a constant image becomes zeros."""
    values = np.asarray(values, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if not np.isfinite(low) or not np.isfinite(high):
        raise ValueError("image contains NaN or infinite values")
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def _describe(err: Exception) -> str:
    if isinstance(err, UnidentifiedImageError):
        return "not a recognised image format (PNG, JPEG or DICOM expected)"
    if isinstance(err, Image.DecompressionBombError):
        return f"image over Pillow's decompression-bomb limit ({err})"
    if isinstance(err, InvalidDicomError):
        return f"not a valid DICOM file ({err})"
    text = " ".join(str(err).split())  # decoder messages are often several lines
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
