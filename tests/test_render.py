"""The torch rasterizer, mesh shading and hand overlays; and the 6 poses x 3 views picture."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from handos.hand import HandModel
from handos.io.schema import Hand
from handos.render import FINGER_COLORS, draw_hands, rasterize, rasterize_fragments, render_mesh
from handos.render.overlay import HAND_COLORS

K = torch.tensor([[100.0, 0.0, 32.0], [0.0, 100.0, 24.0], [0.0, 0.0, 1.0]])


def _quad(z: float, half: float, cx: float = 0.0, cy: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A camera-facing square at depth z (two triangles)."""
    v = torch.tensor([[cx - half, cy - half, z], [cx + half, cy - half, z], [cx + half, cy + half, z],
                      [cx - half, cy + half, z]])
    return v, torch.tensor([[0, 1, 2], [0, 2, 3]])


@pytest.fixture(scope="module")
def hm() -> HandModel:
    return HandModel()


def test_nearer_triangle_wins_in_any_order():
    far_v, far_f = _quad(2.0, 0.5)
    near_v, near_f = _quad(1.0, 0.05)
    for first_near in (True, False):
        parts = [(near_v, near_f), (far_v, far_f)] if first_near else [(far_v, far_f), (near_v, near_f)]
        verts = torch.cat([parts[0][0], parts[1][0]])
        faces = torch.cat([parts[0][1], parts[1][1] + 4])
        depth, face = rasterize(verts, faces, K, 48, 64)
        near_ids = {0, 1} if first_near else {2, 3}
        assert int(face[24, 32]) in near_ids and depth[24, 32].item() == pytest.approx(1.0, abs=1e-5)
        assert int(face[10, 12]) not in near_ids and int(face[10, 12]) >= 0 and depth[10, 12].item() == pytest.approx(2.0, abs=1e-5)


def test_coverage_background_and_pixel_centres():
    v, f = _quad(1.0, 0.1)  # projects to u in [22, 42], v in [14, 34]
    depth, face = rasterize(v, f, K, 48, 64)
    covered = face >= 0
    assert covered.sum().item() == 21 * 21
    rows, cols = torch.nonzero(covered, as_tuple=True)
    assert (rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()) == (14, 34, 22, 42)
    assert torch.isinf(depth[~covered]).all() and (face[~covered] == -1).all()
    # behind the camera: nothing
    depth, face = rasterize(v * torch.tensor([1.0, 1.0, -1.0]), f, K, 48, 64)
    assert (face == -1).all()


def test_empty_inputs():
    depth, face = rasterize(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long), K, 8, 8)
    assert (face == -1).all() and torch.isinf(depth).all()
    img = np.full((8, 8, 3), 7, np.uint8)
    assert (draw_hands(img, []) == 7).all()


def test_skeleton_with_missing_joints(hm):
    img = np.zeros((400, 400, 3), np.uint8)
    kp = np.stack([np.linspace(20, 380, 21), np.linspace(20, 380, 21)], 1)
    kp[8] = np.nan
    hand = Hand(id=0, score=0.5, handedness="left", handedness_score=0.5, bbox_xyxy=np.array([2.0, 2, 62, 62]),
                keypoints_2d=kp, keypoints_score=np.ones(21), joints_3d=np.zeros((21, 3)), cam_t=np.zeros(3))
    out = draw_hands(img, [hand], show_boxes=False, show_labels=False)
    assert tuple(out[int(kp[12, 1]), int(kp[12, 0])]) == FINGER_COLORS["middle"]
    c8 = int(20 + 8 * 18)  # where joint 8 would be
    assert not (out[c8 - 3:c8 + 4, c8 - 3:c8 + 4] == FINGER_COLORS["index"]).all(-1).any(), "no index tip drawn"


def test_depth_is_perspective_correct():
    # a plane tilted in depth: z = 1 + x
    v = torch.tensor([[-0.3, -0.2, 0.7], [0.3, -0.2, 1.3], [0.3, 0.2, 1.3], [-0.3, 0.2, 0.7]])
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    frags = rasterize_fragments(v, f, K, 48, 64)
    rows, cols = torch.nonzero(frags.face_index >= 0, as_tuple=True)
    # ray through pixel (u, v): x = z (u - cx) / fx; on the plane z = 1 + x -> z = 1 / (1 - (u - cx) / fx)
    expect = 1.0 / (1.0 - (cols.float() - 32.0) / 100.0)
    assert torch.allclose(frags.depth[rows, cols], expect, atol=1e-4)
    assert torch.allclose(frags.bary[rows, cols].sum(-1), torch.ones(len(rows)), atol=1e-5)


def test_hand_render_fast_enough_and_sane(hm):
    out = hm(hm.pose_preset("grasp")[None])
    verts = out.vertices[0] + torch.tensor([0.0, 0.05, 0.45])
    K640 = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    depth, face = rasterize(verts, hm.faces, torch.tensor(K640, dtype=torch.float32), 480, 640)
    assert 5000 < (face >= 0).sum().item() < 640 * 480 / 2
    vis = depth[face >= 0]
    assert vis.min() >= verts[:, 2].min() - 1e-5 and vis.max() <= verts[:, 2].max() + 1e-5
    assert vis.min() < verts[:, 2].min() + 0.005  # the nearest part of the hand is visible
    img = render_mesh(np.zeros((480, 640, 3), np.uint8), [(verts, hm.faces, (200, 160, 140))], K640, alpha=1.0)
    assert img.dtype == np.uint8 and img[face.numpy() >= 0].mean() > 60
    assert (img[face.numpy() < 0] == 0).all()


def test_render_mesh_alpha_and_multiple_meshes():
    a_v, a_f = _quad(1.0, 0.08, cx=-0.1)
    b_v, b_f = _quad(1.0, 0.08, cx=0.1)
    base = np.full((48, 64, 3), 50, np.uint8)
    img = render_mesh(base, [(a_v, a_f, (255, 0, 0)), (b_v, b_f, (0, 0, 255))], K, alpha=1.0)
    left, right = img[24, 22], img[24, 42]
    assert left[0] > 100 and left[2] < 40 and right[2] > 100 and right[0] < 40
    assert (img[2, 2] == 50).all()
    half = render_mesh(base, [(a_v, a_f, (255, 0, 0))], K, alpha=0.5)
    assert 50 < half[24, 22, 0] < left[0] and half[24, 22, 2] < 50
    assert render_mesh(None, [], K, height=8, width=8).shape == (8, 8, 3)


def _hand_record(hm, K_np: np.ndarray, handedness: str, offset_x: float) -> Hand:
    out = hm(hm.pose_preset("spread")[None], None, torch.tensor([handedness == "left"]))
    rot = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1]])
    joints = out.joints[0] @ rot.T + torch.tensor([offset_x, 0.07, 0.5])
    verts = out.vertices[0] @ rot.T + torch.tensor([offset_x, 0.07, 0.5])
    uv = (joints / joints[:, 2:]) @ torch.tensor(K_np, dtype=torch.float32).T
    kp = uv[:, :2].numpy()
    box = np.concatenate([kp.min(0) - 10, kp.max(0) + 10])
    return Hand(id=0, score=0.97, handedness=handedness, handedness_score=0.9, bbox_xyxy=box, keypoints_2d=kp,
                keypoints_score=np.ones(21), joints_3d=joints.numpy(), cam_t=joints[0].numpy(),
                vertices=verts.numpy())


def test_overlay_draws_in_the_right_place(hm, artifacts):
    h, w = 480, 640
    K_np = np.array([[600.0, 0, w / 2], [0, 600.0, h / 2], [0, 0, 1]])
    hands = [_hand_record(hm, K_np, "right", -0.07), _hand_record(hm, K_np, "left", 0.07)]
    blank = np.zeros((h, w, 3), np.uint8)
    img = draw_hands(blank, hands, show_labels=True)
    assert (blank == 0).all(), "the input image is not modified"
    for hand in hands:
        kp = np.round(hand.keypoints_2d).astype(int)
        for j, finger in ((4, "thumb"), (8, "index"), (12, "middle"), (16, "ring"), (20, "pinky"), (0, "wrist")):
            assert tuple(img[kp[j, 1], kp[j, 0]]) == FINGER_COLORS[finger], (hand.handedness, finger)
        x1, y1, x2, y2 = np.round(hand.bbox_xyxy).astype(int)
        box_color = HAND_COLORS[hand.handedness]
        assert tuple(img[(y1 + y2) // 2, x1]) == box_color and tuple(img[y2, (x1 + x2) // 2]) == box_color
        assert (img[y1 - 12:y1, x1:x1 + 60] == box_color).all(-1).sum() > 100, "label background above the box"
    # nothing drawn far from the hands
    assert (img[:, :5] == 0).all() and (img[-5:] == 0).all()
    # mesh overlay: the projected silhouette gets coloured, on the image's own resolution
    meshed = draw_hands(blank, hands, show_boxes=False, show_skeleton=False, show_labels=False,
                        mesh_faces=hm.faces_for, K=K_np)
    palm = hands[0].joints_3d[[0, 5, 9, 13, 17]].mean(0)
    u, v = (K_np @ palm / palm[2])[:2].round().astype(int)
    assert meshed[v, u].sum() > 150 and (meshed[:5, :5] == 0).all()
    both = draw_hands(np.full((h, w, 3), 90, np.uint8), hands, mesh_faces=lambda hd: hm.faces_for(hd == "left"), K=K_np)
    import cv2

    cv2.imwrite(str(artifacts / "hand_overlay.png"), both[..., ::-1])


def test_pose_grid_picture(hm, artifacts):
    """6 poses x 3 views -> tests/artifacts/hand_poses.png (look at it)."""
    import cv2

    from handos.render.views import render_view

    poses = ["flat", "fist", "pinch", "point", "grasp", "ok"]
    rows = []
    for name in poses:
        out = hm(hm.pose_preset(name)[None])
        tiles = []
        for view in ("front", "side", "top"):
            tile = render_view(out.vertices[0], hm.faces, view, size=256)
            fg = (np.abs(tile.astype(int) - np.array([40, 44, 52])).sum(-1) > 0).mean()
            assert 0.08 < fg < 0.8, (name, view, fg)
            cv2.putText(tile, f"{name} / {view}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(tile)
        rows.append(np.concatenate(tiles, axis=1))
    grid = np.concatenate(rows, axis=0)
    assert cv2.imwrite(str(artifacts / "hand_poses.png"), grid[..., ::-1])


@pytest.mark.gpu
def test_cuda_matches_cpu(hm):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    verts = hm(hm.pose_preset("fist")[None]).vertices[0] + torch.tensor([0.0, 0.05, 0.4])
    Kt = torch.tensor([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    d_cpu, f_cpu = rasterize(verts, hm.faces, Kt, 480, 640)
    d_gpu, f_gpu = rasterize(verts.cuda(), hm.faces.cuda(), Kt.cuda(), 480, 640)
    assert f_gpu.is_cuda
    same = (f_cpu == f_gpu.cpu()).float().mean()
    assert same > 0.995
    m = f_cpu >= 0
    assert torch.allclose(d_cpu[m], d_gpu.cpu()[m], atol=1e-4)
    img = render_mesh(None, [(verts.cuda(), hm.faces.cuda(), (200, 150, 120))], Kt.cuda(), height=480, width=640)
    assert img.shape == (480, 640, 3)


@pytest.mark.gpu
def test_hand_model_on_cuda_matches_cpu(hm):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    g = torch.Generator().manual_seed(0)
    pose = torch.cat([torch.randn(8, 1, 3, generator=g), hm.sample_poses(8, g)], 1)
    left = torch.arange(8) % 2 == 0
    cpu = hm(pose, None, left)
    gpu_model = HandModel().cuda()
    gpu = gpu_model(pose.cuda(), None, left.cuda())
    assert torch.allclose(gpu.vertices.cpu(), cpu.vertices, atol=1e-5)
    assert gpu_model.sample_poses(4, g).is_cuda
