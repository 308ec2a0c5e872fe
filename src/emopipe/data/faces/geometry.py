"""Face geometry: a detected box (and landmarks), levelling the eyes, and the square crop around a face."""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

Point = tuple[float, float]


@dataclass(frozen=True)
class FaceBox:
    """A face in source-image pixels; ``landmarks`` (mtcnn only): left eye, right eye, nose,
    left and right mouth corner, as (x, y), "left" meaning the image's left."""

    x: int
    y: int
    w: int
    h: int
    landmarks: tuple[Point, ...] | None = None

    @property
    def area(self) -> int:
        return self.w * self.h

    def __str__(self) -> str:
        return f"{self.x},{self.y},{self.w},{self.h}"

    @classmethod
    def parse(cls, text: str) -> FaceBox:
        x, y, w, h = (int(v) for v in text.split(","))
        return cls(x, y, w, h)


def align_face(image: Image.Image, box: FaceBox) -> tuple[Image.Image, FaceBox]:
    """(the image rotated about the eyes' midpoint so that they are level, the box carried along).

    The box keeps its size; its centre and landmarks rotate with the image. Corners uncovered by
    the rotation repeat the edge pixels, like the crop keeps a photo's own pixels. The turn is at
    most 90° either way: eye landmarks in the wrong order never turn a face upside down.
    """
    if not box.landmarks:
        raise ValueError("align_face needs a box with landmarks (faces.detector: mtcnn)")
    (lx, ly), (rx, ry) = box.landmarks[:2]
    angle = math.degrees(math.atan2(ry - ly, rx - lx))
    angle = angle - 180 if angle > 90 else angle + 180 if angle < -90 else angle
    rotation = cv2.getRotationMatrix2D(((lx + rx) / 2, (ly + ry) / 2), angle, 1.0)
    width, height = image.size
    pixels = cv2.warpAffine(np.asarray(image.convert("RGB")), rotation, (width, height), flags=cv2.INTER_CUBIC,
                            borderMode=cv2.BORDER_REPLICATE)

    def turn(x: float, y: float) -> Point:
        tx, ty = rotation @ np.array([x, y, 1.0])
        return float(tx), float(ty)

    cx, cy = turn(box.x + box.w / 2, box.y + box.h / 2)
    moved = FaceBox(round(cx - box.w / 2), round(cy - box.h / 2), box.w, box.h, tuple(turn(x, y) for x, y in box.landmarks))
    return Image.fromarray(pixels), moved



def face_crop(image: Image.Image, box: FaceBox | None, *, align: bool, margin: float, size: int) -> Image.Image:
    """`crop_face` of one detected face, first rotated eyes-level when `align` and the box has landmarks."""
    if align and box is not None and box.landmarks:
        image, box = align_face(image, box)
    return crop_face(image, box, margin=margin, size=size)



def crop_face(image: Image.Image, box: FaceBox | None, *, margin: float, size: int) -> Image.Image:
    """The face square: ``box`` grown by ``margin`` × its longer side on every side, resized to size×size.

    The square is shifted to stay inside the image and, where it would be larger than the
    image's shorter side, shrunk to it: tight face crops keep their own pixels rather than
    gaining smeared or black borders. ``box`` None gives the centre square crop.
    """
    width, height = image.size
    if box is None:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
    else:
        side = max(1, min(round(max(box.w, box.h) * (1 + 2 * margin)), width, height))
        left = min(max(0, round(box.x + (box.w - side) / 2)), width - side)
        top = min(max(0, round(box.y + (box.h - side) / 2)), height - side)
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)

