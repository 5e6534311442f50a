"""Box-safe augmentation: boxes stay on their objects' pixels through every step of the SSD recipe."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from mobilenetv2_dense.datasets.detection.transforms import (
    DetectionAugment,
    DetectionTransform,
    MinIoURandomCrop,
    ZoomOut,
    _iou,
    eval_transform,
    train_transform,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
RED, BLUE = (230, 20, 20), (20, 20, 230)


def two_objects() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 160x120 gray image with a red object (label 1) and a blue one (label 2), and their boxes."""
    image = np.full((120, 160, 3), 90, dtype=np.uint8)
    image[30:90, 20:70] = RED
    image[20:60, 90:150] = BLUE
    return image, np.array([[20, 30, 70, 90], [90, 20, 150, 60]], dtype=np.float32), np.array([1, 2])


def pixels(tensor: torch.Tensor) -> np.ndarray:
    """Undo the normalisation: ``(3, S, S)`` float -> ``(S, S, 3)`` in 0..255."""
    return (tensor.permute(1, 2, 0).numpy() * np.array(STD) + np.array(MEAN)) * 255


def colour_bounds(image: np.ndarray, channel: int) -> np.ndarray | None:
    """xyxy bounds of the pixels where ``channel`` dominates (red: 0, blue: 2); ``None`` if there are none."""
    others = np.delete(image, channel, axis=2).max(axis=2)
    ys, xs = np.nonzero(image[..., channel] - others > 105)  # halfway between the object and the gray background
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) if len(xs) else None


@pytest.mark.parametrize("augment", [
    DetectionAugment(photometric=False),  # zoom out + min-IoU crop + flip
    DetectionAugment(photometric=False, max_zoom=1.0, min_iou_crop=False),  # flip only
    DetectionAugment(photometric=False, zoom_p=1.0, min_iou_crop=False, hflip=False),  # zoom out only
], ids=["ssd", "flip", "zoom"])
def test_boxes_still_bound_their_objects(augment: DetectionAugment) -> None:
    image, boxes, labels = two_objects()
    transform = train_transform(image_size=96, mean=MEAN, std=STD, augment=augment)
    seen_boxes = 0
    for seed in range(40):
        transform.set_random_seed(seed)
        out, out_boxes, out_labels = transform(image, boxes, labels)
        assert out.shape == (3, 96, 96) and out.dtype == torch.float32
        assert out_boxes.dtype == torch.float32 and out_labels.dtype == torch.int64
        assert len(out_boxes) == len(out_labels) and set(out_labels.tolist()) <= {1, 2}
        image_out = pixels(out)
        for box, label in zip(out_boxes.numpy(), out_labels.tolist()):
            if min(box[2] - box[0], box[3] - box[1]) < 3:
                continue  # a sliver can vanish in the resize
            bounds = colour_bounds(image_out, 0 if label == 1 else 2)
            assert bounds is not None, (seed, label)
            # bilinear resizing puts the half-way colour within half a pixel of the true edge
            np.testing.assert_allclose(bounds, box, atol=1.0, err_msg=f"seed {seed} label {label}")
            seen_boxes += 1
    assert seen_boxes >= 40


def test_photometric_distortion_changes_pixels_not_boxes() -> None:
    image, boxes, labels = two_objects()
    augment = DetectionAugment(photometric=True, max_zoom=1.0, min_iou_crop=False, hflip=False)
    transform = train_transform(image_size=96, mean=MEAN, std=STD, augment=augment)
    plain, _, _ = eval_transform(image_size=96, mean=MEAN, std=STD)(image, boxes, labels)
    changed = 0
    for seed in range(10):
        transform.set_random_seed(seed)
        out, out_boxes, out_labels = transform(image, boxes, labels)
        torch.testing.assert_close(out_boxes, torch.tensor(boxes) * torch.tensor([96 / 160, 96 / 120] * 2))
        assert out_labels.tolist() == [1, 2]
        changed += not torch.allclose(out, plain, atol=1e-3)
    assert changed >= 5  # each of the two distortions fires with probability 1/2


def test_eval_transform_resizes_boxes_and_normalises() -> None:
    image = np.full((50, 200, 3), (51, 102, 204), dtype=np.uint8)  # a constant image stays constant when resized
    boxes = np.array([[10, 5, 110, 45]], dtype=np.float32)
    out, out_boxes, out_labels = eval_transform(image_size=64, mean=MEAN, std=STD)(image, boxes, np.array([3]))
    assert out.shape == (3, 64, 64)
    expected = (torch.tensor([51, 102, 204]) / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(out[:, 10, 20], expected.float())
    # no letterbox: x scales by S / W, y by S / H
    torch.testing.assert_close(out_boxes, torch.tensor([[10 * 64 / 200, 5 * 64 / 50, 110 * 64 / 200, 45 * 64 / 50]]))
    assert out_labels.tolist() == [3]


def test_images_without_boxes_pass_through() -> None:
    image = np.full((40, 60, 3), 128, dtype=np.uint8)
    for seed in range(10):
        transform = train_transform(image_size=32)
        transform.set_random_seed(seed)
        out, boxes, labels = transform(image, np.zeros((0, 4)), np.zeros(0))
        assert out.shape == (3, 32, 32) and boxes.shape == (0, 4) and labels.shape == (0,)


def test_iou_matches_torchvision() -> None:
    rng = np.random.default_rng(0)
    a = np.sort(rng.uniform(0, 100, (7, 2, 2)), axis=1).transpose(0, 2, 1).reshape(7, 4)[:, [0, 2, 1, 3]]
    b = np.sort(rng.uniform(0, 100, (5, 2, 2)), axis=1).transpose(0, 2, 1).reshape(5, 4)[:, [0, 2, 1, 3]]
    np.testing.assert_allclose(_iou(a, b), box_iou(torch.tensor(a), torch.tensor(b)).numpy(), rtol=1e-6)


@pytest.mark.parametrize("min_iou", [0.1, 0.5, 0.7])
def test_min_iou_crop_meets_its_constraint(min_iou: float) -> None:
    """Whenever a patch is chosen for option ``min_iou``, some box overlaps it by at least that IoU (checked with
    torchvision's ``box_iou``) and has its centre inside it; the patch keeps SSD's size and shape limits."""
    crop = MinIoURandomCrop()
    boxes = torch.tensor([[10.0, 10, 110, 100], [100, 20, 150, 60]])  # one large box, so IoU 0.7 is reachable
    normalised = (boxes / torch.tensor([160, 120] * 2)).numpy()
    cropped = 0
    for seed in range(30):
        crop.set_random_seed(seed)
        crop.py_random.choice = lambda options: min_iou
        x0, y0, x1, y1 = crop.get_params_dependent_on_data({"shape": (120, 160, 3)},
                                                           {"bboxes": normalised})["crop_coords"]
        if (x0, y0, x1, y1) == (0, 0, 160, 120):
            continue  # no valid patch in 50 trials: SSD keeps the image
        cropped += 1
        patch = torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        # 1e-4: the transform sees the boxes after albumentations' normalise / denormalise round trip
        inside = (centres > patch[:, :2] - 1e-4).all(1) & (centres < patch[:, 2:] + 1e-4).all(1)
        assert inside.any()
        assert box_iou(patch, boxes).max() >= min_iou - 1e-6
        assert 0.3 * 160 - 1 <= x1 - x0 <= 160 and 0.3 * 120 - 1 <= y1 - y0 <= 120
        assert 0.5 <= (y1 - y0) / (x1 - x0) <= 2
    assert cropped >= 20


def test_min_iou_crop_drops_boxes_by_centre_and_clips_the_rest() -> None:
    crop = MinIoURandomCrop()
    transform = DetectionTransform([crop])
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 40, 40], [40, 40, 90, 90], [70, 70, 95, 95]], dtype=np.float32)
    labels = np.array([1, 2, 3])
    # centres (25, 25), (65, 65), (82.5, 82.5): only the first lies inside a (0, 0, 60, 60) patch
    crop.get_params_dependent_on_data = lambda params, data: {"crop_coords": (0, 0, 60, 60)}
    out, out_boxes, out_labels = transform(image, boxes, labels)
    assert out.shape == (60, 60, 3) and out_labels.tolist() == [1]
    torch.testing.assert_close(out_boxes, torch.tensor([[10.0, 10, 40, 40]]))
    # in a (20, 20, 80, 80) patch the first two centres are inside: both kept, shifted and clipped to the patch
    crop.get_params_dependent_on_data = lambda params, data: {"crop_coords": (20, 20, 80, 80)}
    out, out_boxes, out_labels = transform(image, boxes, labels)
    assert out_labels.tolist() == [1, 2]
    torch.testing.assert_close(out_boxes, torch.tensor([[0.0, 0, 20, 20], [20, 20, 60, 60]]))


def test_zoom_out_places_the_image_on_a_filled_canvas() -> None:
    image, boxes, labels = two_objects()
    compose = A.Compose([ZoomOut(max_scale=4.0, fill=(1, 2, 3), p=1.0)],
                        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]))
    sizes = []
    for seed in range(10):
        compose.set_random_seed(seed)
        out = compose(image=image, bboxes=boxes, labels=labels)
        canvas = out["image"]
        sizes.append(canvas.shape[0] / 120)
        assert 120 <= canvas.shape[0] <= 480 and 160 <= canvas.shape[1] <= 640
        assert canvas.shape[1] / 160 == pytest.approx(canvas.shape[0] / 120, abs=0.02)  # one scale for both sides
        shift = out["bboxes"][0, :2] - boxes[0, :2]  # where the original's top-left corner went
        x, y = int(round(shift[0])), int(round(shift[1]))
        np.testing.assert_array_equal(canvas[y:y + 120, x:x + 160], image)
        np.testing.assert_allclose(out["bboxes"], boxes + np.array([x, y, x, y]), atol=1e-3)
        outside = np.ones(canvas.shape[:2], dtype=bool)
        outside[y:y + 120, x:x + 160] = False
        assert (canvas[outside] == (1, 2, 3)).all()
    assert max(sizes) > 2 and min(sizes) >= 1


def test_augment_rejects_zoom_below_one() -> None:
    with pytest.raises(ValueError, match="max_zoom"):
        DetectionAugment(max_zoom=0.5)
