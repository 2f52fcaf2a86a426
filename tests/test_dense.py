"""The lab's dense tasks, the FCN and CenterNet heads, and their metrics against hand-computed values."""

import math

import pytest
import torch

from ftcourse import dense, experiments, models, train


@pytest.fixture(scope="module")
def scenes():
    return dense.make_scenes("related", 40, seed=3)


def test_scenes_are_deterministic_and_nested(scenes):
    again = dense.make_scenes("related", 20, seed=3)
    assert torch.equal(again.images, scenes.images[:20]) and torch.equal(again.masks, scenes.masks[:20])
    assert torch.equal(again.boxes, scenes.boxes[:20])
    other = dense.make_scenes("related", 20, seed=4)
    assert not torch.equal(other.images, again.images)


def test_val_and_test_do_not_depend_on_the_seed():
    a, b = dense.dense_target("conflict", 4, n_val=8, n_test=8, seed=0), dense.dense_target("conflict", 4, n_val=8,
                                                                                              n_test=8, seed=1)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.test.masks, b.test.masks)
    assert not torch.equal(a.train.images, b.train.images)
    assert not torch.equal(a.val.images, a.test.images)


def test_scenes_hold_one_to_four_objects_with_classes_in_range(scenes):
    objects = (scenes.boxes[..., 0] >= 0).sum(1)
    assert objects.min() >= 1 and objects.max() <= 4 and (objects >= 2).any()
    assert scenes.masks.min() == 0 and scenes.masks.max() <= 5
    assert scenes.images.dtype == torch.uint8 and scenes.images.shape == (40, 3, 32, 32)


def test_every_box_is_the_tight_box_of_its_objects_pixels(scenes):
    for mask, boxes in zip(scenes.masks, scenes.boxes):
        covered = torch.zeros_like(mask, dtype=torch.bool)
        for c, x0, y0, x1, y1 in boxes[boxes[:, 0] >= 0].long().tolist():
            inside = mask[y0:y1, x0:x1] == c + 1
            # tight: the object's class touches each of the four edges of its box
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            covered[y0:y1, x0:x1] |= inside
        assert torch.equal(covered, mask > 0), "a shape's pixels lie outside every box of its class"


def test_masks_follow_the_renderer_where_shapes_are_drawn(scenes):
    # The shapes are bright on a dark background: shape pixels are brighter than background ones on average.
    brightness = scenes.images.float().mean(1)
    assert brightness[scenes.masks > 0].mean() > brightness[scenes.masks == 0].mean() + 40


def test_conflict_scenes_label_pixels_by_colour():
    data = dense.make_scenes("conflict", 60, seed=0)
    hue_of = {}
    for c in range(5):
        pixels = data.images.permute(0, 2, 3, 1)[data.masks == c + 1].float()
        hue_of[c] = pixels.mean(0)
    # red (class 0) is red-dominant, green (class 2) green-dominant, blue (class 3) blue-dominant
    assert hue_of[0].argmax() == 0 and hue_of[2].argmax() == 1 and hue_of[3].argmax() == 2


def test_unknown_target_and_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="related"):
        dense.make_scenes("texture", 4)
    with pytest.raises(ValueError, match="positive int"):
        dense.make_scenes("related", 0)


# ----------------------------------------------------------------------------------------------- metrics

def test_mean_iou_matches_a_hand_computed_example():
    pred = torch.tensor([[0, 1, 1], [2, 2, 0]])
    target = torch.tensor([[0, 1, 2], [2, 2, 2]])
    # class 0: I = 1 (pixel (0,0)), U = 2 ((0,0) and (1,2)) -> 1/2
    # class 1: I = 1, U = 2 -> 1/2;  class 2: I = 2, U = 4 -> 1/2;  class 3 absent from both: left out
    assert dense.iou_per_class(pred, target, 4)[:3].tolist() == [0.5, 0.5, 0.5]
    assert math.isnan(dense.iou_per_class(pred, target, 4)[3])
    assert dense.mean_iou(pred, target, 4) == pytest.approx(0.5)
    assert dense.mean_iou(target, target, 4) == 1.0


def test_mean_iou_counts_a_class_predicted_but_absent_as_zero():
    target = torch.zeros(2, 2, dtype=torch.long)
    pred = torch.tensor([[0, 0], [0, 1]])
    assert dense.mean_iou(pred, target, 2) == pytest.approx((3 / 4 + 0) / 2)


def test_mean_iou_refuses_scores_and_out_of_range_classes():
    with pytest.raises(ValueError, match="argmax"):
        dense.mean_iou(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="num_classes"):
        dense.mean_iou(torch.tensor([0, 5]), torch.tensor([0, 1]), 3)


def test_average_precision_matches_a_hand_computed_example():
    truth = [torch.tensor([[0, 0, 0, 10, 10.]]), torch.tensor([[0, 20, 20, 30, 30.]])]
    detections = [torch.tensor([[0, 0.9, 0, 0, 10, 10], [0, 0.8, 1, 1, 10, 10.]]),  # a hit, then a duplicate
                  torch.tensor([[0, 0.7, 21, 20, 30, 30.]])]  # a hit (IoU 0.9)
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1: envelope 1 up to recall 1/2, then 2/3 -> AP = 1/2 + 1/3
    assert dense.average_precision(detections, truth, 1) == pytest.approx(0.5 + 1 / 3)


def test_average_precision_edge_cases():
    truth = [torch.tensor([[1, 0, 0, 10, 10.]])]
    assert dense.average_precision([torch.zeros(0, 6)], truth, 3) == 0.0  # no detections
    perfect = [torch.tensor([[1, 0.5, 0, 0, 10, 10.], [2, 0.9, 0, 0, 10, 10.]])]  # class 2 has no truth: left out
    assert dense.average_precision(perfect, truth, 3) == 1.0
    below = [torch.tensor([[1, 0.5, 0, 0, 10, 4.9]])]  # IoU 0.49 < 0.5: a false positive
    assert dense.average_precision(below, truth, 3) == 0.0
    assert dense.average_precision(perfect, torch.tensor([[[1, 0, 0, 10, 10.], [-1, -1, -1, -1, -1]]]), 3) == 1.0
    assert math.isnan(dense.average_precision([torch.zeros(0, 6)], [torch.zeros(0, 5)], 3))


def test_box_iou_by_hand():
    assert dense.box_iou(torch.tensor([[0, 0, 2, 2.]]), torch.tensor([[1, 1, 3, 3.], [0, 0, 2, 2.]])).tolist() == [
        [pytest.approx(1 / 7), 1.0]]


def perfect_outputs(boxes, num_classes, size=16):
    """What a perfect DetectionNet would output for ``boxes``."""
    heat = dense.heatmap_targets(boxes, num_classes, size).clamp(1e-6, 1 - 1e-6)
    out = torch.zeros(len(boxes), num_classes + 4, size, size)
    out[:, :num_classes] = torch.logit(heat)
    for i, image in enumerate(boxes):
        for c, x0, y0, x1, y1 in image[image[:, 0] >= 0].tolist():
            cx, cy = (x0 + x1) / 2 / dense.STRIDE, (y0 + y1) / 2 / dense.STRIDE
            out[i, num_classes:, int(cy), int(cx)] = torch.tensor(
                [(x1 - x0) / dense.STRIDE, (y1 - y0) / dense.STRIDE, cx - int(cx), cy - int(cy)])
    return out


def test_decode_recovers_the_boxes_from_perfect_outputs(scenes):
    outputs = perfect_outputs(scenes.boxes, 5)
    assert dense.average_precision(dense.decode(outputs), scenes.boxes, 5) == pytest.approx(1.0)
    assert dense.detection_loss(outputs, scenes.boxes) < dense.detection_loss(torch.zeros_like(outputs),
                                                                                scenes.boxes)


def test_heatmap_is_one_exactly_at_each_centre():
    boxes = torch.tensor([[[2, 4, 4, 12, 12.], [-1, -1, -1, -1, -1]]])
    heat = dense.heatmap_targets(boxes, 3, 16)
    assert heat[0, 2, 4, 4] == 1 and (heat == 1).sum() == 1 and heat[0, :2].abs().sum() == 0


# ----------------------------------------------------------------------------------------------- heads

@pytest.mark.parametrize("net, shape", [(dense.SegmentationNet, (2, 6, 32, 32)), (dense.DetectionNet, (2, 9, 16, 16))])
def test_heads_output_shapes_and_keep_the_checkpoints_stages_exactly(net, shape):
    shipped = models.pretrained("lab")
    model = net(models.copy_model(shipped), 5)
    assert model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == shape
    for stage in shipped.stage_names[:-1]:
        for name, tensor in shipped.stage(stage).state_dict().items():
            assert torch.equal(model.backbone.stage(stage).state_dict()[name], tensor), f"{stage}.{name}"


@pytest.mark.parametrize("kind", ["segmentation", "detection"])
def test_a_short_fit_lowers_each_heads_loss(kind):
    data = dense.make_scenes("related", 32, seed=0)
    model = experiments.dense_model(kind, "finetune", 5, seed=0)
    loss = dense.segmentation_loss if kind == "segmentation" else dense.detection_loss
    history = train.fit(model, data.for_training(kind), val=data.for_training(kind), steps=30, lr=0.1,
                        batch_size=16, loss=loss, sync_every=10, progress=False)
    assert history.train_loss[-1] < history.train_loss[0]
    assert len(history.val_loss) == 3 and not history.val_acc and math.isnan(history.train_acc[0])


def test_a_frozen_backbone_does_not_move_not_even_its_batchnorm_statistics():
    data = dense.make_scenes("related", 32, seed=0)
    model = experiments.dense_model("segmentation", "probe", 5, seed=0)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    train.fit(model, data.for_training("segmentation"), steps=5, lr=0.1, batch_size=16,
              loss=dense.segmentation_loss, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())


def test_early_stages_frozen_moves_only_the_later_stages():
    task = dense.dense_target("related", 16, n_val=8, n_test=8)
    result = experiments.dense_run(task, "segmentation", "early stages frozen", lr=0.1, steps=5, batch_size=8)
    assert result["distance stem"] == 0 and result["distance layer1"] == 0 and result["distance layer4"] > 0
    assert 0 <= result["score"] <= 1 and 0 <= result["val_score"] <= 1


def test_fit_with_a_loss_refuses_label_smoothing_and_mismatched_targets():
    data = dense.make_scenes("related", 8, seed=0)
    model = experiments.dense_model("segmentation", "scratch", 5)
    with pytest.raises(ValueError, match="label_smoothing"):
        train.fit(model, data.for_training("segmentation"), steps=1, loss=dense.segmentation_loss,
                  label_smoothing=0.1)
    with pytest.raises(ValueError, match="one per image"):
        train.fit(model, (data.images, data.masks[:4]), steps=1, loss=dense.segmentation_loss)
