"""The paper-specific parts of Face-LLaVA, AAP and CoRIT, each on tiny random-init configs:
FRGCA's mask orientation and shapes for images and videos (with and without CLS), the
stages' freezing, AAP's anchoring loss on real images only with a detached error map, and
CoRIT's region refinement and injection."""

from __future__ import annotations

import pytest
import torch

from training.config import RunConfig, from_dict
from training.models.face_llava import (
    REGIONS,
    FaceLlava,
    LandmarkProjector,
    patch_centres,
    proximity_bias,
    region_centroids,
)


def face_landmarks(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 68, 2) points in [0.1, 0.9], crop-normalised."""
    return 0.1 + 0.8 * torch.rand(n, 68, 2, generator=torch.Generator().manual_seed(seed))


# --- Face-LLaVA -------------------------------------------------------------------------------


def test_patch_centres_run_row_major_with_x_the_column():
    centres = patch_centres(4)
    # patch 3 is row 0, column 3: right edge, top
    assert torch.allclose(centres[3], torch.tensor([0.875, 0.125]))
    # patch 12 is row 3, column 0: left edge, bottom
    assert torch.allclose(centres[12], torch.tensor([0.125, 0.875]))


def test_the_proximity_mask_points_each_patch_at_the_region_under_it():
    """One region's points sit in the top-right corner (x = 0.9 = column, y = 0.1 = row),
    another's in the bottom-left; the patch in row 0, last column must favour the first,
    the patch in the last row, column 0 the second.  Swapping x and y (the public code's
    slip) would send both to the wrong corner."""
    grid = 8
    landmarks = torch.full((1, 68, 2), 0.5)
    jaw, inner_lips = REGIONS[0][1], REGIONS[8][1]
    landmarks[0, jaw] = torch.tensor([0.9, 0.1])
    landmarks[0, inner_lips] = torch.tensor([0.1, 0.9])
    bias = proximity_bias(landmarks, grid, has_cls=False, temperature=0.1)[0]  # (P, 9)
    top_right, bottom_left = grid - 1, (grid - 1) * grid
    assert int(bias[top_right].argmax()) == 0
    assert int(bias[bottom_left].argmax()) == 8
    assert bias[top_right, 0] > bias[bottom_left, 0] + 1.0
    # a log-probability over the regions: each row's exponentials sum to 1
    assert torch.allclose(bias.exp().sum(-1), torch.ones(grid * grid), atol=1e-5)


def test_the_cls_row_has_no_bias_and_centroids_are_region_means():
    landmarks = face_landmarks(3)
    bias = proximity_bias(landmarks, 4, has_cls=True, temperature=0.1)
    assert bias.shape == (3, 17, 9)
    assert torch.equal(bias[:, 0], torch.zeros(3, 9))
    centroids = region_centroids(landmarks)
    assert torch.allclose(centroids[:, 5], landmarks[:, 36:42].mean(1))  # right eye


def test_frlp_slices_each_region_into_its_own_linear():
    frlp = LandmarkProjector(16)
    landmarks = face_landmarks(2)
    out = frlp(landmarks)
    assert out.shape == (2, 9, 16)
    moved = landmarks.clone()
    moved[:, 60:68] += 0.05  # inner lips only
    delta = (frlp(moved) - out).abs().sum(-1)  # (2, 9)
    # every region token moves through the global projection; the inner lips' most
    with torch.no_grad():
        frlp.global_projection.weight.zero_()
        frlp.global_projection.bias.zero_()
        local = (frlp(moved) - frlp(landmarks)).abs().sum(-1)
    assert torch.count_nonzero(local[:, :8]) == 0 and bool((local[:, 8] > 0).all())
    assert bool((delta > 0).all())
    with pytest.raises(ValueError, match="68, 2"):
        frlp(torch.rand(2, 81, 2))


def face_llava(**model) -> FaceLlava:
    config = from_dict({"model": {"name": "face_llava", **model}})
    torch.manual_seed(0)
    return FaceLlava(config.model, vocab_size=64, image_id=5)


@pytest.mark.parametrize("keep_cls", [False, True])
def test_frgca_takes_image_and_video_token_counts(keep_cls):
    model = face_llava(keep_cls=keep_cls)
    per_frame = 16 + int(keep_cls)
    assert model.tokens_per_frame == per_frame
    pixels, landmarks = torch.randn(1 + 8, 3, 32, 32), face_landmarks(9)
    tokens = model.visual_tokens(pixels, landmarks)
    assert tokens.shape == (9, per_frame, 64)
    # an image (1 frame) and a video (8 frames) in one batch: each run of image tokens gets its frames
    ids = torch.full((2, 8 * per_frame + 4), 7)
    ids[0, 2:2 + per_frame] = 5
    ids[1, 2:2 + 8 * per_frame] = 5
    embeds = model.embed(ids, pixels, landmarks, torch.tensor([1, 8]))
    assert torch.allclose(embeds[0, 2:2 + per_frame], tokens[0])
    assert torch.allclose(embeds[1, 2:2 + 8 * per_frame], tokens[1:].reshape(-1, 64))
    with pytest.raises(ValueError, match="image tokens"):
        model.embed(ids, pixels, landmarks, torch.tensor([2, 7]))


def test_the_landmarks_reach_the_visual_tokens():
    """Other landmarks on the same pixels give other visual tokens (FRLP and FRGCA are on the path)."""
    model = face_llava()
    pixels = torch.randn(2, 3, 32, 32)
    a = model.visual_tokens(pixels, face_landmarks(2, seed=1))
    b = model.visual_tokens(pixels, face_landmarks(2, seed=2))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("stage", [1, 2])
def test_the_stages_freeze_what_the_paper_freezes(stage):
    model = face_llava(stage=stage)
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    frozen = {name.split(".")[0] for name, p in model.named_parameters() if not p.requires_grad}
    if stage == 1:
        assert trainable == {"landmark_projector", "cross_attention"}
        assert {"vision", "lm", "projector"} <= frozen
    else:
        assert trainable == {"landmark_projector", "cross_attention", "lm", "projector"}
        assert frozen == {"vision"}
    # one optimizer step moves exactly the trainable weights
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.cat([torch.full((2, 2), 7), torch.full((2, 16), 5), torch.randint(8, 60, (2, 6))], 1)
    labels = ids.clone()
    labels[:, :18] = -100
    batch = {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids),
             "pixel_values": torch.randn(2, 3, 32, 32), "landmarks": face_landmarks(2),
             "frame_counts": torch.tensor([1, 1])}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(batch).loss.backward()
    optimizer.step()
    for name, p in model.named_parameters():
        changed = not torch.equal(p.detach(), before[name])
        if not p.requires_grad:
            assert not changed, name
    assert any(not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters()
               if n.startswith("landmark_projector"))


# --- AAP ----------------------------------------------------------------------------------------


def aap_batch(is_fake: list[int], with_masks: bool = True) -> dict:
    """Two-sample batch in the tiny AAP's shapes: 16 image tokens, one [SEG] (id 6) each."""
    n = len(is_fake)
    ids = torch.cat([torch.full((n, 1), 1), torch.full((n, 16), 5), torch.randint(8, 60, (n, 4)),
                     torch.full((n, 1), 6), torch.full((n, 1), 2)], 1)
    labels = ids.clone()
    labels[:, :19] = -100
    return {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids),
            "pixel_values": torch.randn(n, 3, 32, 32), "sam_pixel_values": torch.randn(n, 3, 64, 64),
            "is_fake": torch.tensor(is_fake), "prompt_end": torch.full((n,), 18),
            "seg_positions": [torch.tensor([20])] * n,
            "masks": [torch.rand(1, 32, 32) > 0.5 if with_masks else torch.zeros(0, 32, 32, dtype=torch.bool)] * n}


def aap(**loss):
    from training.models.aap import Aap

    config = RunConfig.preset("aap", "tiny")
    for k, v in loss.items():
        setattr(config.loss, k, v)
    torch.manual_seed(0)
    return Aap(config.model, 64, {"<image>": 5, "[SEG]": 6}, config.loss)


def test_the_anchoring_loss_counts_real_images_only():
    model = aap()
    torch.manual_seed(1)
    batch = aap_batch([0, 1])
    both = model(batch)
    real_only = model({k: v[:1] for k, v in batch.items()})
    assert both.parts["arl"] > 0
    assert torch.allclose(both.parts["arl"], real_only.parts["arl"], atol=1e-6)
    fakes = model(aap_batch([1, 1]))
    assert float(fakes.parts["arl"].detach()) == 0.0
    # the anchoring term pulls on P_phi only through the real image
    model.zero_grad()
    (model(aap_batch([1, 1])).parts["arl"]).backward()
    grads = [p.grad for p in model.anchor_projector.parameters()]
    assert all(g is None or float(g.abs().sum()) == 0.0 for g in grads)


def test_the_error_map_is_detached_and_reaches_the_dense_prompt():
    model = aap(cls=0.0, arl=0.0, text=0.0)
    batch = aap_batch([1, 0])
    out = model(batch)
    assert out.error_map.shape == (2, 4, 4) and not out.error_map.requires_grad
    model.zero_grad()
    out.parts["seg"].backward()
    # the mask loss trains P_psi (the map reaches the decoder) but not P_phi (the map is detached)
    assert float(sum(p.grad.abs().sum() for p in model.error_projector.parameters())) > 0
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0.0 for p in model.anchor_projector.parameters())
    # the vision tower, the truth anchor, is frozen
    assert not any(p.requires_grad for p in model.vision.parameters())


def test_aap_masks_follow_the_seg_prompts():
    model = aap()
    batch = aap_batch([1, 1], with_masks=False)
    batch["seg_positions"] = [torch.tensor([], dtype=torch.long), torch.tensor([20])]
    batch["masks"] = [torch.zeros(0, 32, 32, dtype=torch.bool), torch.rand(1, 32, 32) > 0.5]
    out = model(batch)
    assert [m.shape for m in out.mask_logits] == [(0, 32, 32), (1, 32, 32)]
    assert out.parts["seg"] > 0


# --- CoRIT --------------------------------------------------------------------------------------


def test_region_refinement_keeps_the_tokens_that_follow_their_regions_anchor():
    from training.models.corit import refine_regions

    x = torch.zeros(1, 4, 3)
    partner = torch.tensor([[[1.0, 0, 0], [1.0, 0.1, 0], [-1.0, 0, 0], [0, 0, 1.0]]])
    regions = torch.tensor([[[True, True, True, False], [False, False, False, True]]])
    refined = refine_regions(x, partner, regions, coherence=0.0)
    # region 0's anchor points along +x: token 2 points the other way and is dropped
    assert refined[0, 0].tolist() == [True, True, False, False]
    assert refined[0, 1].tolist() == [False, False, False, True]
    # the mask does not depend on which of the pair is x
    assert torch.equal(refine_regions(partner, x, regions, 0.0), refined)
    # a threshold nothing passes leaves the region as it was
    assert torch.equal(refine_regions(x, partner, regions, coherence=1.1), regions)


def test_corit_injects_region_features_and_trains_only_its_tokens_and_head():
    from training.models.corit import Corit

    config = RunConfig.preset("corit", "tiny")
    torch.manual_seed(0)
    model = Corit(config.model, config.loss)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == \
        {"region_embedding", "head.weight", "head.bias"}
    grid = config.model.image_size // config.model.patch_size
    regions = torch.zeros(2, 3, grid, grid, dtype=torch.bool)
    regions[:, 0, 2:6, 2:6] = True
    regions[:, 2] = ~regions[:, 0]
    regions[:, 1, 0, 0], regions[:, 2, 0, 0] = True, False
    batch = {"pixel_values": torch.randn(2, 3, 64, 64), "partner_values": torch.randn(2, 3, 64, 64),
             "regions": regions, "is_fake": torch.tensor([0, 1])}
    out = model(batch)
    assert out.logits.shape == (2,) and out.refined.shape == (2, 3, grid * grid)
    assert not bool((out.refined & ~regions.flatten(2)).any())  # refinement only removes
    # the face region's pixels reach the logit through the region tokens
    changed = dict(batch)
    changed["pixel_values"] = batch["pixel_values"].clone()
    changed["pixel_values"][:, :, 16:48, 16:48] += 1.0
    assert not torch.allclose(model(changed).logits, out.logits)
