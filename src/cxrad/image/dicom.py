"""Image reading (below every stage): a DICOM to one grey channel, whatever its transfer syntax.

Order: modality LUT (or RescaleSlope/Intercept), then the VOI LUT or the window when present,
then scaling by the output range that BitsStored implies; MONOCHROME1 is inverted last. The
first frame of a multi-frame file is used. Compressed syntaxes decode through pydicom's plugins
(pylibjpeg with openjpeg, libjpeg and rle; Pillow); one no installed plugin covers fails with
``unsupported_transfer_syntax``, naming the syntax and what to install.

Broken display headers do not lose an image: a Window Width below 1, a VOI LUT shorter than its
descriptor, or a Modality LUT item without its descriptor is ignored (noted in
``info["notes"]``), and the pixels are scaled by their stored range instead.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import numpy as np

from cxrad.errors import ImageReadError
from cxrad.image.pil import bits_for, check_size, grey_from_rgb

logger = logging.getLogger(__name__)
# pydicom logs every plugin failure with a traceback at ERROR level; the failure reaches the
# caller as one ImageReadError instead, so those lines would only be noise (or a "traceback").
logging.getLogger("pydicom.pixels.decoders.base").setLevel(logging.CRITICAL)

TAGS = ("Modality", "BodyPartExamined", "ViewPosition", "PhotometricInterpretation", "SOPClassUID")
"""DICOM tags copied into ``ImageRead.info`` (None when absent)."""

_UNCOMPRESSED = {
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
}


def read_dicom(source: Any, max_pixels: int, name: str) -> tuple[np.ndarray, dict[str, Any]]:
    """``(pixels, info)`` of one DICOM: ``uint8`` or float32 in [0, 1], 2-D.

    Raises:
        ImageReadError: ``not_an_image`` (no dataset or no pixel data), ``too_large``,
            ``truncated``, ``unsupported_transfer_syntax`` or ``undecodable`` (a header
            element that cannot be parsed or used, e.g. an unknown VR, a text RescaleSlope).
    """
    with warnings.catch_warnings():  # pydicom warns per odd element; the reason says enough
        warnings.simplefilter("ignore")
        try:
            return _read_dicom(source, max_pixels, name)
        except ImageReadError:
            raise
        except (MemoryError, KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as e:  # elements parse lazily: a bad one raises on first use
            raise ImageReadError("undecodable", f"corrupt DICOM header: {name}: {_short(e)}") from e


def _read_dicom(source: Any, max_pixels: int, name: str) -> tuple[np.ndarray, dict[str, Any]]:
    ds = _dataset(source, name)
    info: dict[str, Any] = {"format": "dicom", **{t: _tag(ds, t) for t in TAGS}}
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageReadError("not_an_image", f"not an image: {name}: DICOM without pixel data")
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    if rows <= 0 or cols <= 0:
        raise ImageReadError(
            "not_an_image", f"not an image: {name}: DICOM Rows x Columns is {rows}x{cols}"
        )
    check_size(cols, rows, max_pixels, name)
    _fill_transfer_syntax(ds)
    arr = _pixels(ds, name)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "").upper()
    notes: list[str] = []
    if photometric == "PALETTE COLOR" and arr.ndim == 2:
        from pydicom.pixels.processing import apply_color_lut

        arr = apply_color_lut(arr, ds)
        desc = ds.get("RedPaletteColorLookupTableDescriptor") or [0, 0, 16]
        bits = int(desc[2]) if arr.dtype != np.uint8 else 8
    else:
        bits = _int(ds, "BitsStored")
    if arr.ndim == 3:  # colour (pydicom converts YBR to RGB)
        out, colour = _colour(arr, bits)
    elif arr.ndim == 2:
        out, colour = _grey(arr, ds, photometric, notes), False
    else:
        raise ImageReadError(
            "undecodable", f"corrupt pixel data: {name}: DICOM pixels have shape {arr.shape}"
        )
    info.update(width=int(out.shape[1]), height=int(out.shape[0]), mode=photometric)
    info["colour"] = colour
    if notes:
        info["notes"] = notes
        logger.info("%s: %s", name, "; ".join(notes))
    return out, info


def _tag(ds: Any, tag: str) -> str | None:
    value = ds.get(tag)
    return None if value is None or value == "" else str(value)


def _int(ds: Any, tag: str) -> int:
    try:
        return int(ds.get(tag, 0) or 0)
    except (TypeError, ValueError):
        return 0


def _dataset(source: Any, name: str) -> Any:
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(source, force=True)
    except Exception as e:  # pydicom raises many types for a damaged header
        raise ImageReadError(
            "not_an_image", f"not an image: {name}: unreadable DICOM ({type(e).__name__}: {e})"
        ) from e


def _fill_transfer_syntax(ds: Any) -> None:
    """Files without file meta (no preamble) get the syntax their bytes were read in."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if "TransferSyntaxUID" in getattr(ds, "file_meta", {}):
        return
    implicit, little = ds.original_encoding
    if not hasattr(ds, "file_meta") or ds.file_meta is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian
        if implicit
        else ExplicitVRLittleEndian
        if little
        else ExplicitVRBigEndian
    )


def _pixels(ds: Any, name: str) -> np.ndarray:
    ts = ds.file_meta.get("TransferSyntaxUID")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # RLE: pydicom's own decoder. pylibjpeg-rle (Rust) panics on some corrupt data
            # and its panic hook prints to stderr, which would look like a crash to a user.
            plugin = "pydicom" if str(ts) == "1.2.840.10008.1.2.5" else ""
            ds.pixel_array_options(index=0, decoding_plugin=plugin)
            return np.asarray(ds.pixel_array)
    except (MemoryError, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as e:  # pydicom and its plugins raise many types (pyo3 panics too)
        missing = missing_decoder(ts)
        compressed = ts is not None and str(ts) not in _UNCOMPRESSED
        if not missing and compressed and _int(ds, "BitsAllocated") == 1:
            missing = "the installed decoders cannot decode 1-bit data in this syntax"
        if missing:
            raise ImageReadError(
                "unsupported_transfer_syntax",
                f"unsupported transfer syntax: {name}: {_ts_name(ts)}: {missing}",
            ) from e
        if ts is None or str(ts) in _UNCOMPRESSED:
            raise ImageReadError(
                "truncated", f"truncated image: {name}: DICOM pixel data ({_short(e)})"
            ) from e
        raise ImageReadError(
            "undecodable",
            f"corrupt pixel data: {name}: {_ts_name(ts)} pixel data did not decode ({_short(e)})",
        ) from e


def _ts_name(ts: Any) -> str:
    return f"{ts.name} ({ts})" if ts is not None and ts.name != str(ts) else str(ts)


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}"


def missing_decoder(ts: Any) -> str | None:
    """Why no installed plugin decodes transfer syntax ``ts`` (None when one does)."""
    if ts is None:
        return None
    import pydicom
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(ts)
    except (NotImplementedError, ValueError):
        return (
            f"pydicom {pydicom.__version__} has no decoder for it; convert the file to an "
            "uncompressed syntax first (e.g. `gdcmconv --raw in.dcm out.dcm`)"
        )
    if not decoder.is_available:
        return "no decoder is installed for it; install one of: " + ", ".join(
            decoder.missing_dependencies
        )
    return None


def _colour(arr: np.ndarray, bits: int) -> tuple[np.ndarray, bool]:
    rgb = arr[..., :3]
    if rgb.dtype != np.uint8:
        bits = bits or bits_for(int(rgb.max()) if rgb.size else 0)
        top = float(2 ** min(max(bits, 1), 32) - 1)
        rgb = np.clip(rgb.astype(np.float32) / np.float32(top), 0.0, 1.0)
        rgb = np.rint(rgb * 255).astype(np.uint8)
    grey = grey_from_rgb(rgb)
    return grey, grey.dtype != np.uint8


def _grey(arr: np.ndarray, ds: Any, photometric: str, notes: list[str]) -> np.ndarray:
    from pydicom.pixels.processing import apply_modality_lut, apply_voi, apply_windowing

    _check_modality_lut(ds, notes)
    out = apply_modality_lut(arr, ds)
    lo, hi = _dicom_range(ds)
    if _voi_lut_ok(ds, notes):
        out = apply_voi(out, ds, index=0)
        desc = ds.VOILUTSequence[0].LUTDescriptor
        lo, hi = 0.0, float(max(2 ** int(desc[2]) - 1, np.max(out)))
    elif _window_ok(ds, notes):
        out = apply_windowing(out, ds, index=0)
    out = np.nan_to_num(out.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if not hi > lo or not math.isfinite(hi - lo):
        return np.zeros(out.shape, np.float32)
    out = np.clip((out - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return out.astype(np.float32)


def _first(value: Any) -> Any:
    from pydicom.multival import MultiValue

    return value[0] if isinstance(value, MultiValue | list | tuple) and len(value) else value


def _lut_ok(item: Any) -> str | None:
    """Why a LUT item cannot be applied (None when it can)."""
    desc = item.get("LUTDescriptor")
    if desc is None or len(desc) != 3:
        return "no 3-value LUTDescriptor"
    entries = int(desc[0]) or 65536
    bits = int(desc[2])
    data = item.get("LUTData")
    if data is None:
        return "no LUTData"
    n = len(data) // 2 if isinstance(data, bytes) else len(data) if hasattr(data, "__len__") else 1
    if n < entries:
        return f"LUTData has {n} entries, its descriptor says {entries}"
    if not (bits == 8 or 10 <= bits <= 16):
        return f"LUT bit depth {bits} is not 8 or 10..16"
    return None


def _check_modality_lut(ds: Any, notes: list[str]) -> None:
    seq = ds.get("ModalityLUTSequence")
    if seq is not None:
        why = "empty sequence" if len(seq) == 0 else _lut_ok(seq[0]) or _modality_bits(seq[0])
        if why:
            notes.append(f"Modality LUT ignored ({why})")
            del ds.ModalityLUTSequence
    for tag in ("RescaleSlope", "RescaleIntercept"):  # with or without a LUT
        if tag in ds and not _finite(ds.get(tag)):
            notes.append(f"{tag} ignored (not a finite number)")
            delattr(ds, tag)


def _modality_bits(item: Any) -> str | None:
    """PS3.3 C.11.1.1: a Modality LUT's entries are 8 or 16 bits (pydicom fails on others)."""
    bits = int(item.LUTDescriptor[2])
    return None if bits in (8, 16) else f"LUT bit depth {bits} is not 8 or 16, as it must be"


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(_first(value)))
    except (TypeError, ValueError):
        return False


def _voi_lut_ok(ds: Any, notes: list[str]) -> bool:
    seq = ds.get("VOILUTSequence")
    if seq is None or len(seq) == 0:
        return False
    why = _lut_ok(seq[0])
    if why:
        notes.append(f"VOI LUT ignored ({why})")
        return False
    return True


def _window_ok(ds: Any, notes: list[str]) -> bool:
    centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if centre is None or width is None:
        return False
    if not (_finite(centre) and _finite(width)):
        notes.append("window ignored (Window Center/Width is not a number)")
        return False
    if float(_first(width)) < 1:
        notes.append(f"window ignored (Window Width {float(_first(width)):g} is below 1)")
        return False
    return True


def _dicom_range(ds: Any) -> tuple[float, float]:
    """The output range of the modality LUT implied by BitsStored (as pydicom's windowing uses)."""
    bits = min(max(_int(ds, "BitsStored") or _int(ds, "BitsAllocated") or 8, 1), 64)
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    if _int(ds, "PixelRepresentation") == 0:
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        s, i = float(_first(slope)), float(_first(intercept))
        lo, hi = sorted((lo * s + i, hi * s + i))
    return lo, hi
