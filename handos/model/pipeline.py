"""`handos.load()` and `HandOS`: the frozen foundation and the 2D-3D decoder in one pass per batch."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from handos import __version__
from handos.device import resolve_device
from handos.errors import InputError, ModelError
from handos.geometry import to_host
from handos.io.camera import Camera
from handos.io.images import ImageLike, LoadedImage, load_image
from handos.io.schema import Hand, HandTrace, prediction_record
from handos.weights import WEIGHTS_DIR

# the package's major.minor, in each record's `model` field: handos-MAJOR.MINOR-<weights digest>
MODEL_SERIES = ".".join(__version__.split(".")[:2])

DECODER_FILE = "decoder.safetensors"

# hand boxes of one image: [[x1, y1, x2, y2], ...] px (a list, a (k,4) array or tensor)
BoxesLike = Sequence[Sequence[float]] | np.ndarray | torch.Tensor


def resolve_weights(weights: str | os.PathLike | None) -> Path:
    """The decoder weights file: shipped (None, or $HANDOS_WEIGHTS), a local file or folder, or a Hub repo id."""
    if weights is None and os.environ.get("HANDOS_WEIGHTS"):
        weights = os.environ["HANDOS_WEIGHTS"]
    if weights is None:
        path = WEIGHTS_DIR / DECODER_FILE
        if not path.exists():
            raise ModelError(f"shipped decoder weights missing at {path}; reinstall handos or pass weights=PATH")
        return path
    path = Path(weights)
    if path.is_dir():
        path = path / DECODER_FILE
    if path.exists():
        return path
    text = str(weights)
    if text.count("/") == 1 and not text.startswith((".", "/")) and not text.endswith(".safetensors"):
        return download_from_hub(text)
    raise ModelError(f"weights {text!r} not found: give a .safetensors file, a folder holding {DECODER_FILE}, or a Hub repo id")


def download_from_hub(repo_id: str) -> Path:
    """Fetch decoder weights from a Hub repo (only when the user names one); clear error when offline."""
    try:
        from huggingface_hub import hf_hub_download

        file = hf_hub_download(repo_id, DECODER_FILE)
        try:
            hf_hub_download(repo_id, "decoder_config.json")
        except Exception:
            pass
        return Path(file)
    except Exception as err:  # offline, no such repo, auth: all one message
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"cannot get {DECODER_FILE} from the Hugging Face Hub repo {repo_id!r} ({first[:160]}); "
                         "check the id and your connection, or pass a local path") from None


def file_digest(path: Path) -> str:
    """First 8 hex digits of a file's sha256 (names the weights version)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


class HandOS:
    """The whole model: image(s) in, a list of `Hand` per image out (image -> foundation -> decoder -> Hand)."""

    def __init__(self, foundation, decoder, device: torch.device, version: str, max_hands: int = 2,
                 score_threshold: float = 0.5, fit_camera: bool = True, mesh: str = "skinned",
                 decoder_runtime: str = "torch") -> None:
        """Wrap a loaded foundation and decoder; use `handos.load()` rather than this.

        fit_camera: keep the decoder's depth but refit the camera translation's x, y so the 3D joints reproject
        onto the refined 2D joints (least squares); on ge2019 (200 images) the reprojection error against the
        ground-truth 2D fell 11.7 -> 10.8 px with the root depth unchanged (refitting depth too placed the
        decoder's slightly small hands 19 mm too close), and mesh overlays line up with the keypoints.
        mesh: "skinned" (default) poses our hand model's template so its bones follow the decoder's 3D joints
        (the shipped decoder's own 64-coarse-vertex mesh keeps the pose but flattens the fingers); "decoder"
        returns the decoder's vertices as they are.
        decoder_runtime: what runs the decode step at inference on the CPU: "torch" or "litert" (the same maths as
        TFLite graphs written from the decoder's weights, `handos.model.litert_decoder`: the whole step with the
        skinned mesh, the trunk with the decoder's own); `load` chooses it.
        """
        if mesh not in ("skinned", "decoder"):
            raise ModelError(f"mesh must be 'skinned' or 'decoder', got {mesh!r}")
        self.fit_camera = fit_camera
        self.mesh = mesh
        if decoder_runtime not in ("torch", "litert"):
            raise ModelError(f"decoder_runtime must be 'torch' or 'litert', got {decoder_runtime!r}")
        self.decoder_runtime = decoder_runtime
        from handos.foundation.runtime import default_threads

        self.decoder_threads = default_threads()  # LiteRT's threads for the decode step: as the nets' (torch's count now)
        self.template = None
        if mesh == "skinned":
            from handos.hand import HandModel

            hand = HandModel()
            if int(hand.rest_vertices.shape[0]) == decoder.num_vertices:  # same mesh (vertex order and faces)
                self.template = (hand.rest_vertices.float(), hand.rest_joints.float(), hand.skin_weights.float())
        self.foundation = foundation
        self.decoder = decoder
        self.device = device
        self.version = version
        self.max_hands = max_hands
        self.score_threshold = score_threshold
        # box prompts: extra landmark passes, each on the ROI the previous pass's landmarks give; on ge2019's first
        # 100 images with GT joint boxes grown 1.2x, PCK2D@0.05 0.782 (box ROI only) -> 0.827 (+1) -> 0.828 (+2)
        self.box_refine = 2

    # ---- inputs -------------------------------------------------------------------------------
    @staticmethod
    def load_images(images: Sequence[ImageLike]) -> list[LoadedImage]:
        """Load and validate each image (paths, bytes, arrays, PIL)."""
        return [load_image(im) for im in images]

    @staticmethod
    def camera_for(image: LoadedImage | np.ndarray, camera: Camera | dict | None = None) -> Camera:
        """The camera used for an image: given, else EXIF focal, else the default field of view."""
        if isinstance(image, np.ndarray):
            image = LoadedImage(image, None, None)
        return Camera.from_any(camera, image.width, image.height, image.focal_35mm)

    # ---- prediction ---------------------------------------------------------------------------
    def __call__(self, image: ImageLike, camera: Camera | dict | None = None, boxes: BoxesLike | None = None,
                 **kwargs: Any) -> list[Hand]:
        """Hands in one image; with `boxes` ([[x1, y1, x2, y2], ...] px), exactly one hand per box, in order."""
        return self.predict_batch([image], [camera], boxes=None if boxes is None else [boxes], **kwargs)[0]

    def predict_batch(self, images: Sequence[ImageLike], cameras: Sequence[Camera | dict | None] | None = None,
                      max_hands: int | None = None, score_threshold: float | None = None,
                      boxes: Sequence[BoxesLike | None] | None = None) -> list[list[Hand]]:
        """Hands in each of several images, in one foundation + decoder pass.

        boxes: None (the palm detector finds the hands), or one entry per image: None (detect on that image)
        or [[x1, y1, x2, y2], ...] px, which gives exactly one hand per box, in the given order, with no palm
        detection and no score threshold (see `predict_boxes`).
        """
        with self.cpu_threads():
            if boxes is not None:
                return self.predict_boxes(images, cameras, boxes, max_hands=max_hands, score_threshold=score_threshold)
            return self.predict_frames(images, cameras, max_hands=max_hands, score_threshold=score_threshold)

    def cpu_threads(self):
        """Context for one prediction: with the foundation on LiteRT on the CPU, torch's own work (bookkeeping and
        the decoder) on one thread, so that torch's idle threads do not compete with XNNPACK's (see
        `handos.foundation.runtime.torch_single_threaded`)."""
        from handos.foundation.runtime import torch_single_threaded

        return torch_single_threaded(self.device.type == "cpu" and bool(getattr(self.foundation, "litert_only", False)))

    @torch.no_grad()
    def predict_boxes(self, images: Sequence[ImageLike], cameras: Sequence[Camera | dict | None] | None,
                      boxes: Sequence[BoxesLike | None], max_hands: int | None = None,
                      score_threshold: float | None = None) -> list[list[Hand]]:
        """Box-prompted hands: for each image with a box list, one Hand per box (the landmark net on the box's
        square ROI, then `box_refine` passes on the ROI its landmarks give, then the decoder); the Hand's score
        is the landmark net's presence and is never thresholded. Images whose entry is None are detected as usual.
        """
        from handos.foundation.pipeline import check_boxes

        loaded = self.load_images(images)
        n = len(loaded)
        cams = [self.camera_for(im, (cameras[i] if cameras is not None else None)) for i, im in enumerate(loaded)]
        sizes = [(im.width, im.height) for im in loaded]
        given = check_boxes(boxes, sizes)
        out: list[list[Hand]] = [[] for _ in range(n)]
        free = [i for i in range(n) if given[i] is None]
        if free:
            found = self.predict_frames([loaded[i] for i in free], [cams[i] for i in free], max_hands=max_hands,
                                        score_threshold=score_threshold)
            for i, hands in zip(free, found):
                out[i] = hands
        prompted = [i for i in range(n) if given[i] is not None]
        if prompted:
            fout = self.foundation.detect_boxes([loaded[i].rgb for i in prompted], [given[i] for i in prompted],
                                                refine=self.box_refine)
            hands = self.hands_from_foundation(fout, [cams[i] for i in prompted], [sizes[i] for i in prompted],
                                               threshold=float("-inf"), keep_order=True)
            for i, h in zip(prompted, hands):
                out[i] = h
        return out

    @torch.no_grad()
    def predict_frames(self, images: Sequence[ImageLike], cameras: Sequence[Camera | dict | None] | None = None,
                       rois: Sequence[np.ndarray | torch.Tensor | None] | None = None,
                       detect: Sequence[bool] | bool | None = None, max_hands: int | None = None,
                       score_threshold: float | None = None) -> list[list[Hand]]:
        """Like predict_batch, with optional per-frame ROIs carried from the previous frame (video tracking).

        rois[i] None: run the palm detector on frame i. rois[i] (k,5): run the landmark net on those ROIs
        only; with detect[i] also True, the detector runs too and adds hands not already tracked.
        Every Hand's `trace` carries roi (next frame's ROI), roi_index, presence and foundation_box.
        """
        with self.cpu_threads():  # torch's threads would compete with XNNPACK's
            loaded = self.load_images(images)
            n = len(loaded)
            if n == 0:
                return []
            cams = [self.camera_for(im, (cameras[i] if cameras is not None else None)) for i, im in enumerate(loaded)]
            max_hands = self.max_hands if max_hands is None else max_hands
            threshold = self.score_threshold if score_threshold is None else score_threshold
            if max_hands < 1:
                raise InputError(f"max_hands must be at least 1, got {max_hands}")
            rgbs = [im.rgb for im in loaded]
            if rois is None:
                fout = self.foundation.detect(rgbs, max_hands=max_hands)
            else:
                roi_list = [None if r is None else torch.as_tensor(np.asarray(r, dtype=np.float32)).reshape(-1, 5) for r in rois]
                flags = [True] * n if detect is None else ([detect] * n if isinstance(detect, bool) else list(detect))
                # frames that skip the detector get max_hands = their carried count (the foundation detects below it)
                limits = [max_hands if flags[i] or roi_list[i] is None or len(roi_list[i]) == 0 else min(len(roi_list[i]), max_hands)
                          for i in range(n)]
                groups: dict[int, list[int]] = {}
                for i, limit in enumerate(limits):
                    groups.setdefault(limit, []).append(i)
                parts = [(ids, self.foundation.detect([rgbs[i] for i in ids], rois=[roi_list[i] for i in ids], max_hands=limit))
                         for limit, ids in groups.items()]
                fout = parts[0][1] if len(parts) == 1 else concat_outputs(parts, n)
            return self.hands_from_foundation(fout, cams, [(im.width, im.height) for im in loaded], threshold)

    def decode_step(self) -> DecodeStep:
        """The decoder + camera refit + mesh as one module (on the CPU: LiteRT graphs or TorchScript traces, see
        `DecodeStep.infer`), rebuilt when `decoder`, `mesh`, `fit_camera` or `decoder_runtime` change."""
        key = (id(self.decoder), self.mesh, self.fit_camera, self.decoder_runtime)
        cached = self.__dict__.get("_step")
        if cached is None or cached[0] != key:
            template = self.template if self.mesh == "skinned" else None
            trunk = self.decoder_runtime if self.device.type == "cpu" else "torch"
            cached = self.__dict__["_step"] = (key, DecodeStep(self.decoder, template, self.fit_camera, trunk,
                                                               self.decoder_threads))
        return cached[1]

    def hands_from_foundation(self, fout, cams: list[Camera], sizes: list[tuple[int, int]], threshold: float,
                              keep_order: bool = False) -> list[list[Hand]]:
        """Run the decoder on the foundation's hands and assemble `Hand` objects per image (by score, or in the
        foundation's order with `keep_order`)."""
        from handos.model.decoder import decoder_inputs_from_foundation

        n_images = len(cams)
        out: list[list[Hand]] = [[] for _ in range(n_images)]
        if fout.image_index.numel() == 0:
            return out
        idx = fout.image_index.long()
        cam_table = np.array([[c.fx, c.fy, c.cx, c.cy] for c in cams], dtype=np.float32)
        inp = decoder_inputs_from_foundation(fout, torch.from_numpy(cam_table[to_host(idx)]).to(idx.device))
        if self.device != idx.device:
            inp = inp.to(self.device)
        res = [t.cpu().numpy() for t in self.decode_step().infer(inp)]
        kp, kp_score, joints, cam_t, verts, is_left, hand_score = res
        next_rois = fout.next_roi.float().cpu().numpy()
        score = fout.score.float().cpu().numpy()
        presence = fout.presence.float().cpu().numpy()
        boxes = fout.box.float().cpu().numpy()
        roi_index = fout.roi_index.cpu().numpy()
        image_of = idx.cpu().numpy()
        hand_boxes = keypoint_boxes(kp, np.asarray(sizes, dtype=np.float64)[image_of])  # (N,4)
        order = np.arange(len(score)) if keep_order else np.argsort(-score, kind="stable")
        for j in order:
            if score[j] < threshold:
                continue
            i = int(image_of[j])
            box = hand_boxes[j]
            out[i].append(Hand(
                id=len(out[i]), score=float(score[j]),
                handedness="left" if is_left[j] else "right", handedness_score=float(hand_score[j]),
                bbox_xyxy=box, keypoints_2d=kp[j], keypoints_score=kp_score[j], joints_3d=joints[j],
                cam_t=cam_t[j], vertices=verts[j],
                trace=HandTrace(roi=next_rois[j], presence=float(presence[j]), foundation_box=boxes[j],
                                roi_index=None if roi_index[j] < 0 else int(roi_index[j])),
            ))
        return out

    # ---- records ------------------------------------------------------------------------------
    def record(self, image: ImageLike, camera: Camera | dict | None = None, file: str | None = None,
               include_vertices: bool = False, boxes: BoxesLike | None = None) -> dict[str, Any]:
        """The schema record (handos.prediction/1) of one image (with `boxes`: exactly one hand per box)."""
        return self.records_batch([image], [camera], [file], include_vertices,
                                  boxes=None if boxes is None else [boxes])[0]

    def records_batch(self, images: Sequence[ImageLike], cameras: Sequence[Camera | dict | None] | None = None,
                      files: Sequence[str | None] | None = None, include_vertices: bool = False,
                      boxes: Sequence[BoxesLike | None] | None = None) -> list[dict[str, Any]]:
        """Schema records of several images, predicted in one batch (`boxes` as in `predict_batch`)."""
        loaded = self.load_images(images)
        cams = [self.camera_for(im, cameras[i] if cameras is not None else None) for i, im in enumerate(loaded)]
        hands = self.predict_batch(loaded, cams, boxes=boxes)
        names = files if files is not None else [im.name for im in loaded]
        return [prediction_record(names[i] if names[i] is not None else loaded[i].name, im.width, im.height,
                                  cams[i].to_dict(), hands[i], self.version, include_vertices=include_vertices)
                for i, im in enumerate(loaded)]

    def faces_for(self, handedness: str | bool) -> np.ndarray:
        """Triangle faces (F, 3) for a 'right' or 'left' hand (winding mirrored for left)."""
        is_left = handedness if isinstance(handedness, bool) else handedness == "left"
        return np.asarray(self.decoder.faces_for(is_left))


class DecodeStep(torch.nn.Module):
    """Decoder, camera x,y refit and mesh for N hands as plain tensors (so TorchScript can trace it).

    forward(joints_2d (N,21,2), joints_z (N,21), joint_conf (N,21), camera (N,4), world (N,21,3),
    landmark_roi (N,5) or None) ->
    (keypoints (N,21,2) px, keypoint scores (N,21), joints (N,21,3) m camera frame, cam_t (N,3) m,
    vertices (N,V,3) m camera frame, is_left (N,) bool, handedness score (N,)).
    It is `encode` (geometry into each hand's ROI frame), the decoder's `trunk` (the network) and `finish`
    (heads -> outputs, camera refit, skinning); with `trunk_runtime` "litert", `infer` runs the whole step on
    LiteRT with the skinned mesh (`litert_decoder.LiteRTDecodeStep`), or the trunk on LiteRT between the two traced
    halves with the decoder's own mesh.
    """

    TRACED_HANDS = 4

    def __init__(self, decoder: torch.nn.Module, template: tuple | None, fit_camera: bool,
                 trunk_runtime: str = "torch", threads: int = 1) -> None:
        super().__init__()
        self.decoder = decoder
        self.fit_camera = fit_camera
        self.skinned = template is not None
        if template is not None:  # our hand model's rest mesh, joints and skinning weights (right hand)
            from handos.model.skinned_mesh import skinning_basis

            rest_vertices, rest_joints, skin_weights = (t.to(decoder.template.device) for t in template)
            self.register_buffer("rest_joints", rest_joints, persistent=False)
            self.register_buffer("skin_basis", skinning_basis(rest_vertices, rest_joints, skin_weights), persistent=False)
        if trunk_runtime not in ("torch", "litert"):
            raise ModelError(f"trunk_runtime must be 'torch' or 'litert', got {trunk_runtime!r}")
        self.litert_trunk = self.litert_step = None
        if trunk_runtime == "litert":
            from handos.model.litert_decoder import LiteRTDecoderTrunk, LiteRTDecodeStep

            if self.skinned:  # the whole step on LiteRT (numpy's SVD for the palm fit between its two graphs)
                self.litert_step = LiteRTDecodeStep(decoder, self.rest_joints, self.skin_basis, fit_camera, threads)
            else:  # the decoder's own mesh: the trunk on LiteRT, the geometry around it traced
                self.litert_trunk = LiteRTDecoderTrunk(decoder, threads)

    @property
    def trunk_runtime(self) -> str:
        """What runs the decoder's trunk in `infer`: "litert" or "torch"."""
        return "torch" if self.litert_trunk is None and self.litert_step is None else "litert"

    def forward(self, joints_2d: torch.Tensor, joints_z: torch.Tensor, joint_conf: torch.Tensor, camera: torch.Tensor,
                world: torch.Tensor, landmark_roi: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """See the class docstring; landmark_roi (N,5): DecoderInput.landmark_roi (None: computed)."""
        evidence, instance, u, roi, rot = self.encode(joints_2d, joints_z, joint_conf, camera, world, landmark_roi)
        heads = self.decoder.trunk(evidence, instance, u)
        return self.finish(joints_2d, joints_z, joint_conf, camera, world, roi, rot, u, *heads)

    def encode(self, joints_2d: torch.Tensor, joints_z: torch.Tensor, joint_conf: torch.Tensor, camera: torch.Tensor,
               world: torch.Tensor, landmark_roi: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """The decoder's `encode` on plain tensors -> (evidence, instance, u, roi, rot)."""
        from handos.model.decoder import DecoderInput

        return self.decoder.encode(DecoderInput(joints_2d, joints_z, joint_conf, camera, world, landmark_roi=landmark_roi))

    def finish(self, joints_2d: torch.Tensor, joints_z: torch.Tensor, joint_conf: torch.Tensor, camera: torch.Tensor,
               world: torch.Tensor, roi: torch.Tensor, rot: torch.Tensor, u: torch.Tensor, head_2d: torch.Tensor,
               head_joint3d: torch.Tensor, head_vertex: torch.Tensor, head_camera: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The trunk's heads -> the outputs of `forward` (decoder `decode`, camera refit, skinned mesh)."""
        from handos.model.camera_fit import fit_translation
        from handos.model.decoder import DecoderInput
        from handos.model.skinned_mesh import skin_to_joints

        inp = DecoderInput(joints_2d, joints_z, joint_conf, camera, world)
        dec = self.decoder.decode(inp, roi, rot, u, head_2d, head_joint3d, head_vertex, head_camera)
        joints, cam_t = dec.joints_3d, dec.cam_t
        if self.fit_camera:  # slide each hand (x, y) so its 3D joints reproject onto its refined 2D joints
            cam_t = fit_translation(joints, dec.joints_2d, dec.joints_2d_score, camera, cam_t, fit_depth=False)
        verts = dec.vertices
        if self.skinned:  # our hand model skinned to the predicted joints
            verts = skin_to_joints(joints, self.rest_joints, self.skin_basis, dec.is_left)
        t = cam_t.unsqueeze(1)
        return dec.joints_2d, dec.joints_2d_score, joints + t, cam_t, verts + t, dec.is_left, dec.handedness_score

    def infer(self, inp) -> tuple[torch.Tensor, ...]:
        """forward on a DecoderInput. Without grad on the CPU with `trunk_runtime` "litert" and the skinned mesh, the
        whole step runs on LiteRT (`litert_decoder.LiteRTDecodeStep`: CPU tensors that are views of numpy arrays).
        Otherwise it runs in inference mode (no autograd bookkeeping per op: ~10% of a 1-hand call) and returns
        inference tensors; on the CPU, for up to `TRACED_HANDS` hands, through TorchScript traces per number of
        hands (~40% less time per call at 1-2 hands, where Python overhead dominates; bigger batches run
        eagerly): of the whole step, or of `encode` and `finish` around the LiteRT trunk (the decoder's own
        mesh). $HANDOS_FAST_REPLAY=0 turns tracing off.
        """
        from handos.model.geometry import landmark_roi

        world = inp.world if inp.world is not None else torch.zeros_like(inp.joints_2d[..., :1]).expand(-1, -1, 3)
        roi = inp.landmark_roi if inp.landmark_roi is not None else landmark_roi(inp.joints_2d).detach()
        args = (inp.joints_2d, inp.joints_z, inp.joint_conf, inp.camera, world, roi)
        if torch.is_grad_enabled():
            return self(*args)
        n = int(inp.joints_2d.shape[0])
        on_cpu = inp.joints_2d.device.type == "cpu"
        if self.litert_step is not None and on_cpu:  # no torch op: LiteRT graphs and numpy's SVD
            host = (to_host(t).astype(np.float32, copy=False) for t in args)
            return tuple(torch.from_numpy(x) for x in self.litert_step.run(*host))
        with torch.inference_mode():
            traced = on_cpu and n <= self.TRACED_HANDS and os.environ.get("HANDOS_FAST_REPLAY") != "0"
            if self.litert_trunk is not None and on_cpu:
                encode = self._trace("encode", n, args) if traced else self.encode
                evidence, instance, u, roi, rot = encode(*args)
                heads = [torch.from_numpy(h) for h in self.litert_trunk.run(evidence.numpy(), instance.numpy(), u.numpy())]
                tail = args[:5] + (roi, rot, u, *heads)
                return (self._trace("finish", n, tail) if traced else self.finish)(*tail)
            if not traced:
                return self(*args)
            return self._trace("forward", n, args)(*args)

    def _trace(self, method: str, n: int, args: tuple) -> torch.jit.ScriptModule:
        """`method` traced and frozen for n hands (built on first use, from these example args)."""
        cache = self.__dict__.setdefault("_traced", {})
        if (method, n) not in cache:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cache[method, n] = torch.jit.freeze(torch.jit.trace(_Method(self, method).eval(), args,
                                                                    check_trace=False))
        return cache[method, n]


class _Method(torch.nn.Module):
    """One method of a module as its forward (what torch.jit.trace traces)."""

    def __init__(self, module: torch.nn.Module, method: str) -> None:
        super().__init__()
        self.module = module
        self.method = method

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """module.method(*args)."""
        return getattr(self.module, self.method)(*args)


def keypoint_boxes(keypoints: np.ndarray, sizes: np.ndarray, pad: float = 0.1) -> np.ndarray:
    """Each hand's keypoint box (N,4) xyxy grown by `pad` of its size on each side and clipped to its image:
    keypoints (N,21,2) px, sizes (N,2) [W,H] px."""
    lo, hi = keypoints.min(1), keypoints.max(1)  # (N,2)
    margin = (hi - lo) * pad
    lo, hi = lo - margin, hi + margin
    return np.concatenate([np.maximum(lo, 0), np.minimum(hi, sizes - 1)], 1).astype(np.float64)


def concat_outputs(parts: list[tuple[list[int], Any]], num_images: int):
    """Join FoundationOutputs of disjoint image groups [(image ids, output)] into one over all images."""
    from dataclasses import fields

    first = parts[0][1]
    sizes = torch.zeros((num_images, 2), dtype=first.image_sizes.dtype, device=first.image_sizes.device)
    joined = {}
    for f in fields(first):
        if f.name == "image_sizes":
            continue
        values = [getattr(out, f.name) for _, out in parts]
        if f.name == "image_index":
            values = [torch.as_tensor(ids, dtype=torch.long, device=v.device)[v] for (ids, _), v in zip(parts, values)]
        joined[f.name] = None if any(v is None for v in values) else torch.cat(values)
    for ids, out in parts:
        sizes[torch.as_tensor(ids, dtype=torch.long)] = out.image_sizes.to(sizes.device)
    return type(first)(image_sizes=sizes, **joined)


FOUNDATION_OPTIONS_FILE = "foundation_config.json"
FOLDER_FOUNDATION_KEYS = ("landmark_passes",)  # what a weights folder may set (its nets were trained for it)


def folder_foundation_options(folder: Path) -> dict[str, Any]:
    """Foundation options a weights folder carries in foundation_config.json ({} when it has none)."""
    from handos.foundation.types import FoundationConfig

    file = folder / FOUNDATION_OPTIONS_FILE
    if folder == WEIGHTS_DIR or not file.is_file():
        return {}
    try:
        opts = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot read {file}: {str(err).splitlines()[0][:160]}") from None
    if not isinstance(opts, dict) or set(opts) - set(FOLDER_FOUNDATION_KEYS):
        raise ModelError(f"{file} may only set {', '.join(FOLDER_FOUNDATION_KEYS)}; got {opts!r:.120}")
    FoundationConfig(**opts)  # range checks (ConfigError)
    return opts


def load(weights: str | os.PathLike | None = None, device: str | torch.device = "auto", max_hands: int = 2,
         score_threshold: float = 0.5, mesh: str = "skinned", recall: str = "fast",
         runtime: str | None = None) -> HandOS:
    """Load handos: shipped weights (None), a local path, or a Hugging Face Hub repo id; device auto/cpu/cuda.

    recall: how hard the detector looks for hands MediaPipe's own path misses: "off" (exactly MediaPipe),
    "fast" (default; extra views only on images where nothing was found), "full", or "search" (multi-scale
    views, ~10x slower: for pre-labeling); see handos.foundation.pipeline.FoundationConfig.
    runtime: what runs the foundation's two nets and the decoder's trunk: "auto" (default, or $HANDOS_RUNTIME when
    None: LiteRT/XNNPACK on the CPU when ai-edge-litert is installed, else torch; torch on CUDA), "torch" or
    "litert"; a weights folder's fine-tuned nets always run on torch ("litert" refuses them), while its decoder
    runs on either (its LiteRT graph is written from its weights); see handos.foundation.runtime and
    handos.model.litert_decoder.
    """
    from handos.foundation import Foundation
    from handos.foundation.pipeline import FoundationConfig
    from handos.model.decoder import load_decoder

    dev = resolve_device(device)
    if runtime is None:
        runtime = os.environ.get("HANDOS_RUNTIME") or "auto"
    path = resolve_weights(weights)
    try:
        decoder = load_decoder(path, device=dev)
    except ModelError:
        raise
    except Exception as err:
        raise ModelError(f"cannot load decoder weights {path}: {str(err).splitlines()[0][:200]}") from None
    tuned = {}  # fine-tuned nets beside the decoder
    for key, file in (("landmark_path", "hand_landmark_full.safetensors"), ("palm_path", "palm_detection_full.safetensors")):
        if path.parent != WEIGHTS_DIR and (path.parent / file).is_file():
            tuned[key] = path.parent / file
    config = FoundationConfig(recall_boost=recall, **folder_foundation_options(path.parent))
    foundation = Foundation.load(device=dev, config=config, runtime=runtime, **tuned)
    version = f"handos-{MODEL_SERIES}-{file_digest(path)}"
    if decoder.config.version.startswith("handos-finetune"):  # fine-tuned weights name themselves
        version = f"{decoder.config.version}-{file_digest(path)}"
    from handos.foundation.runtime import resolve_runtime

    return HandOS(foundation, decoder, dev, version=version, max_hands=max_hands,
                  score_threshold=score_threshold, mesh=mesh, decoder_runtime=resolve_runtime(runtime, dev))
