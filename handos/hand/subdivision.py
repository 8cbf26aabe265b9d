"""Catmull-Clark subdivision of a closed quad mesh as a linear operator, and mesh orientation fixes."""
from __future__ import annotations

from collections import deque

import numpy as np


def catmull_clark(quads: np.ndarray, num_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """One Catmull-Clark step: (S (V', V) with new_points = S @ points, new quads (4F, 4)), orientation kept.

    New vertex order: the V moved old vertices, then one point per edge, then one per face.
    """
    quads = np.asarray(quads, dtype=np.int64)
    nf, nv = len(quads), num_vertices
    sides = np.stack([quads, np.roll(quads, -1, axis=1)], axis=-1).reshape(-1, 2)  # (4F, 2) directed
    edges, side_edge = np.unique(np.sort(sides, axis=1), axis=0, return_inverse=True)  # (E, 2), (4F,)
    side_edge = side_edge.reshape(nf, 4)
    ne = len(edges)
    counts = np.bincount(side_edge.reshape(-1), minlength=ne)
    if not np.all(counts == 2):
        raise ValueError("catmull_clark needs a closed 2-manifold quad mesh (each edge in two faces)")
    order = np.argsort(side_edge.reshape(-1), kind="stable")
    edge_faces = np.repeat(np.arange(nf), 4)[order].reshape(ne, 2)

    rows_f = np.repeat(np.arange(nf), 4)
    fmat = _dense((rows_f, quads.reshape(-1)), 0.25, (nf, nv))  # face points
    mids = _dense((np.repeat(np.arange(ne), 2), edges.reshape(-1)), 0.5, (ne, nv))  # edge midpoints
    ef = _dense((np.repeat(np.arange(ne), 2), edge_faces.reshape(-1)), 0.5, (ne, nf))
    emat = 0.5 * mids + 0.5 * (ef @ fmat)  # (v0 + v1 + f0 + f1) / 4

    vf = _dense((quads.reshape(-1), rows_f), 1.0, (nv, nf))  # vertex-face incidence
    ve = _dense((edges.reshape(-1), np.repeat(np.arange(ne), 2)), 1.0, (nv, ne))  # vertex-edge incidence
    n = ve.sum(1)[:, None]  # valence
    vmat = ((vf @ fmat) / n + 2.0 * (ve @ mids) / n) / n + np.diag((n[:, 0] - 3.0) / n[:, 0])

    smat = np.concatenate([vmat, emat, fmat], axis=0)  # (V + E + F, V)
    e = nv + side_edge  # (F, 4) edge point ids: side i joins corner i and i+1
    f = nv + ne + np.arange(nf)
    new = [np.stack([quads[:, i], e[:, i], f, e[:, (i - 1) % 4]], axis=1) for i in range(4)]
    return smat, np.stack(new, axis=1).reshape(-1, 4)


def _dense(index: tuple[np.ndarray, np.ndarray], value: float, shape: tuple[int, int]) -> np.ndarray:
    """A dense matrix with `value` accumulated at each (row, col) of `index`."""
    out = np.zeros(shape)
    np.add.at(out, index, value)
    return out


def orient_consistently(faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Flip polygons (F, k) so every shared edge runs in opposite directions and the volume is positive."""
    faces = np.array(faces, dtype=np.int64)
    k = faces.shape[1]
    edge_map: dict[tuple[int, int], list[int]] = {}
    for fi, f in enumerate(faces):
        for i in range(k):
            a, b = int(f[i]), int(f[(i + 1) % k])
            edge_map.setdefault((min(a, b), max(a, b)), []).append(fi)
    done = np.zeros(len(faces), dtype=bool)
    for seed in range(len(faces)):
        if done[seed]:
            continue
        done[seed] = True
        queue = deque([seed])
        while queue:
            fi = queue.popleft()
            f = faces[fi]
            for i in range(k):
                a, b = int(f[i]), int(f[(i + 1) % k])
                for nb in edge_map[(min(a, b), max(a, b))]:
                    if nb == fi or done[nb]:
                        continue
                    g = list(faces[nb])
                    same = any(g[j] == a and g[(j + 1) % k] == b for j in range(k))
                    if same:
                        faces[nb] = faces[nb][::-1]
                    done[nb] = True
                    queue.append(nb)
    # signed volume via a fan triangulation
    p = points[faces]
    vol = sum(np.einsum("ij,ij->i", p[:, 0], np.cross(p[:, i], p[:, i + 1])).sum() for i in range(1, k - 1))
    return faces if vol > 0 else faces[:, ::-1].copy()


def triangulate(quads: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Split each quad along its shorter diagonal: (F, 4) -> (2F, 3), orientation kept."""
    q = np.asarray(quads)
    d02 = np.linalg.norm(points[q[:, 0]] - points[q[:, 2]], axis=1)
    d13 = np.linalg.norm(points[q[:, 1]] - points[q[:, 3]], axis=1)
    use02 = (d02 <= d13)[:, None]
    t_a = np.where(use02, q[:, [0, 1, 2]], q[:, [0, 1, 3]])
    t_b = np.where(use02, q[:, [0, 2, 3]], q[:, [1, 2, 3]])
    return np.stack([t_a, t_b], axis=1).reshape(-1, 3)
