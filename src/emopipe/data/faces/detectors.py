"""Face detectors: every face in a photo, largest first. `DETECTORS` is the registry `faces.detector` names.

* ``haar``: OpenCV's Haar cascades (shipped inside opencv-python, so it works offline): the
  frontal cascade, then the alt2 frontal cascade, then the profile cascade (both directions)
  when the previous ones found nothing. Boxes only.
* ``mtcnn``: the MTCNN of facenet-pytorch (its wheel carries the weights, so it works offline
  too): boxes plus five landmarks (eyes, nose, mouth corners).

A detector's ``version`` changes whenever it could give other boxes: it keys the crop cache.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

import cv2
import numpy as np
from PIL import Image

from emopipe.data.faces.geometry import FaceBox
from emopipe.errors import MissingFileError, ParamError
from emopipe.registry import Registry

_CASCADES = ("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt2.xml", "haarcascade_profileface.xml")
# Detection runs on a copy downscaled until the smallest face looked for is _MIN_FACE pixels,
# the cascades' window: cost grows with pixels. Upscaling small photos instead finds 2% more
# faces in muxspace-dev's small crops at 4-10x the cost.
_MIN_FACE = 24
# Tight face crops (forehead or chin cut off) defeat the cascades; an edge-replicated border
# restores some context. On muxspace-dev it lifts the detection rate from 78% to 94%.
_BORDER = 0.15
_SCALE_FACTOR = 1.1
_MIN_NEIGHBORS = (5, 3, 3)  # per cascade: the fallbacks run only when the stricter one found nothing


class Detector(Protocol):
    """What `DETECTORS` build: ``detect`` gives every face found, largest first."""

    name: str  # its key in DETECTORS
    landmarks: bool  # its boxes carry landmarks (alignment needs them)

    @property
    def version(self) -> str: ...

    def detect(self, image: Image.Image) -> list[FaceBox]: ...


DETECTORS: Registry[Callable[[], Detector]] = Registry("faces.detector", "detector")


def make_detector(name: str) -> Detector:
    """The detector `name` (faces.detector)."""
    return DETECTORS.lookup(name)()


def require_landmarks(detector: Detector, align: bool) -> None:
    """Alignment (faces.align) needs the eye landmarks, which not every detector gives."""
    if align and not detector.landmarks:
        raise ParamError(f"faces.align needs eye landmarks, which the {detector.name} detector does not give: "
                         "set faces.detector: mtcnn or faces.align: false")


MIN_SIZE_FRACTION = 0.08  # the smallest face looked for, as a fraction of the photo's shorter side


def _fraction(min_size_fraction: float) -> float:
    if not 0 < min_size_fraction < 1:
        raise ValueError(f"min_size_fraction={min_size_fraction} must be between 0 and 1")
    return min_size_fraction


@DETECTORS.register("haar")
class FaceDetector:
    """OpenCV Haar cascades: frontal default, alt2 fallback, then profile (both directions)."""

    name, landmarks = "haar", False

    def __init__(self, min_size_fraction: float = MIN_SIZE_FRACTION):
        self.min_size_fraction = _fraction(min_size_fraction)
        self._cascades = []
        for name in _CASCADES:
            cascade = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, name))
            if cascade.empty():
                raise RuntimeError(f"OpenCV cannot load its Haar cascade {name}; reinstall opencv-python-headless")
            self._cascades.append(cascade)

    @property
    def version(self) -> str:
        """Changes whenever detection could give different boxes: part of the crop cache key."""
        settings = [_CASCADES, _MIN_FACE, _BORDER, _SCALE_FACTOR, _MIN_NEIGHBORS, self.min_size_fraction]
        return f"haar-1/opencv-{cv2.__version__}/{settings}"

    def detect(self, image: Image.Image) -> list[FaceBox]:
        """All faces found by the first cascade that finds any, largest first."""
        gray = np.asarray(image.convert("L"))
        height, width = gray.shape
        scale = min(1.0, _MIN_FACE / (self.min_size_fraction * min(height, width)))
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        pad = round(_BORDER * max(gray.shape))
        gray = cv2.equalizeHist(cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE))
        found = self._first_hits(gray)
        boxes = {_to_source(x - pad, y - pad, w, h, scale, width, height) for x, y, w, h in found}
        return sorted((b for b in boxes if b.w > 0 and b.h > 0), key=lambda b: (-b.area, b.x, b.y))

    def _first_hits(self, gray: np.ndarray) -> list[tuple[int, int, int, int]]:
        *frontal, profile = self._cascades
        for cascade, neighbors in zip(frontal, _MIN_NEIGHBORS):
            hits = self._run(cascade, gray, neighbors)
            if hits:
                return hits
        # The profile cascade finds faces turned one way only: also run it on the mirror image.
        mirrored = [(gray.shape[1] - x - w, y, w, h) for x, y, w, h in self._run(profile, gray[:, ::-1], _MIN_NEIGHBORS[2])]
        return self._run(profile, gray, _MIN_NEIGHBORS[2]) + mirrored

    @staticmethod
    def _run(cascade: cv2.CascadeClassifier, gray: np.ndarray, neighbors: int) -> list[tuple[int, int, int, int]]:
        found = cascade.detectMultiScale(np.ascontiguousarray(gray), scaleFactor=_SCALE_FACTOR, minNeighbors=neighbors, minSize=(_MIN_FACE, _MIN_FACE))
        return [tuple(int(v) for v in box) for box in found]


def _to_source(x: int, y: int, w: int, h: int, scale: float, width: int, height: int) -> FaceBox:
    """Map a box from the detection copy back to source pixels, clipped to the image."""
    left, top = max(0, round(x / scale)), max(0, round(y / scale))
    right, bottom = min(width, round((x + w) / scale)), min(height, round((y + h) / scale))
    return FaceBox(left, top, right - left, bottom - top)


# MTCNN: the smallest face looked for is this fraction of the shorter side (as for haar), but
# never under its pyramid's floor; photos smaller than that have no face. Thresholds are
# facenet-pytorch's defaults (per stage: proposal, refine, output).
_MTCNN_MIN_FACE = 20
_MTCNN_BORDER = 0.15  # as for haar: an edge-replicated border helps on tight face crops
_MTCNN_THRESHOLDS = (0.6, 0.7, 0.7)
_MTCNN_FACTOR = 0.709


@DETECTORS.register("mtcnn")
class MtcnnDetector:
    """facenet-pytorch's MTCNN on the CPU: boxes and five landmarks, largest face first."""

    name, landmarks = "mtcnn", True

    def __init__(self, min_size_fraction: float = MIN_SIZE_FRACTION):
        self.min_size_fraction = _fraction(min_size_fraction)
        try:
            import facenet_pytorch
            import torch
        except ImportError as err:
            raise MissingFileError(f"faces.detector=mtcnn needs facenet-pytorch: run make install ({err})") from None
        self._mtcnn = facenet_pytorch.MTCNN(keep_all=True, device="cpu", min_face_size=_MTCNN_MIN_FACE,
                                            thresholds=list(_MTCNN_THRESHOLDS), factor=_MTCNN_FACTOR)
        self._versions = f"facenet-pytorch-{_package_version('facenet-pytorch')}/torch-{torch.__version__.split('+')[0]}"

    @property
    def version(self) -> str:
        settings = [_MTCNN_MIN_FACE, _MTCNN_BORDER, _MTCNN_THRESHOLDS, _MTCNN_FACTOR, self.min_size_fraction]
        return f"mtcnn-1/{self._versions}/{settings}"

    def detect(self, image: Image.Image) -> list[FaceBox]:
        width, height = image.size
        min_face = max(_MTCNN_MIN_FACE, round(self.min_size_fraction * min(width, height)))
        if min(width, height) < min_face:  # MTCNN's scale pyramid would be empty
            return []
        self._mtcnn.min_face_size = min_face
        pad = round(_MTCNN_BORDER * max(width, height))
        pixels = cv2.copyMakeBorder(np.asarray(image.convert("RGB")), pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        boxes, _, points = self._mtcnn.detect(pixels, landmarks=True)
        if boxes is None:
            return []
        found = set()
        for (x0, y0, x1, y1), marks in zip(np.asarray(boxes, dtype=float) - pad, np.asarray(points, dtype=float) - pad):
            left, top = max(0, round(x0)), max(0, round(y0))
            right, bottom = min(width, round(x1)), min(height, round(y1))
            if right > left and bottom > top:
                landmarks = tuple((round(float(x), 2), round(float(y), 2)) for x, y in marks)
                found.add(FaceBox(left, top, right - left, bottom - top, landmarks))
        return sorted(found, key=lambda b: (-b.area, b.x, b.y))


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"
