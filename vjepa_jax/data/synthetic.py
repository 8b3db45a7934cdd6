"""Procedurally generated labelled video clips: textured shapes moving, rotating and scaling.

The label of a clip is the pair (shape, motion direction), so a model must look at appearance
and at motion over time to classify it. Every clip is a pure function of (seed, index): the
dataset is random-access and identical across processes, which is what Grain needs.
"""
import math
import os

import numpy as np

SHAPES = ("disc", "square", "triangle", "cross")
DIRECTIONS = ("right", "down", "left", "up")  # image coordinates: y grows downwards
NUM_CLASSES = len(SHAPES) * len(DIRECTIONS)

# Edge normals of an equilateral triangle (pointing up) with inradius 0.5 and circumradius 1.
_TRI_ANGLES = np.deg2rad(np.array([90.0, 210.0, 330.0]))
_TRI_NORMALS = np.stack([np.cos(_TRI_ANGLES), -np.sin(_TRI_ANGLES)], -1)


def label_of(shape, direction):
    """Class id (int) of a (shape index, direction index) pair."""
    return shape * len(DIRECTIONS) + direction


def label_factors(labels):
    """Class ids (an integer array) -> {'shape': shape index, 'direction': direction index}."""
    return {"shape": labels // len(DIRECTIONS), "direction": labels % len(DIRECTIONS)}


def describe(label):
    """Readable name such as 'triangle moving left' for a class id."""
    if not 0 <= label < NUM_CLASSES:
        raise ValueError(f"label {label} outside [0, {NUM_CLASSES})")
    return f"{SHAPES[label // len(DIRECTIONS)]} moving {DIRECTIONS[label % len(DIRECTIONS)]}"


def _shape_distance(shape, u, v):
    """Scaled 'distance' of local coordinates u, v [T,H,W] to the shape: <1 inside, 1 on edge."""
    if shape == 0:  # disc
        return np.sqrt(u * u + v * v)
    if shape == 1:  # square, same area scale as the disc
        return np.maximum(np.abs(u), np.abs(v)) * 1.15
    if shape == 2:  # triangle: max over edges of the signed distance, edge at 0.5
        (a0, b0), (a1, b1), (a2, b2) = _TRI_NORMALS.tolist()
        return np.maximum(np.maximum(u * a0 + v * b0, u * a1 + v * b1), u * a2 + v * b2) * 1.6
    # cross: union of two bars, each 0.9 long and 0.32 half-thick
    au, av_ = np.abs(u), np.abs(v)
    bar1 = np.maximum(au / 0.95, av_ / 0.32)
    bar2 = np.maximum(au / 0.32, av_ / 0.95)
    return np.minimum(bar1, bar2)


class SyntheticVideos:
    """Random-access dataset of generated clips: item i -> {'video': uint8 [T,H,W,3], 'label'}."""

    num_classes = NUM_CLASSES

    def __init__(self, num_videos, num_frames, height, width, seed=0):
        for name, value in (("num_videos", num_videos), ("num_frames", num_frames),
                            ("height", height), ("width", width)):
            if int(value) < 1:
                raise ValueError(f"SyntheticVideos: {name} must be >= 1, got {value}")
        self.num_videos = int(num_videos)
        self.num_frames = int(num_frames)
        self.height = int(height)
        self.width = int(width)
        self.seed = int(seed)
        # Pixel-centre grids shared by all clips; float32 keeps generation a few ms per clip.
        self._ys = np.arange(self.height, dtype=np.float32)[None, :, None] + 0.5
        self._xs = np.arange(self.width, dtype=np.float32)[None, None, :] + 0.5
        self._ts = np.arange(self.num_frames, dtype=np.float32)

    def __len__(self):
        return self.num_videos

    def __repr__(self):
        return (f"SyntheticVideos(num_videos={self.num_videos}, num_frames={self.num_frames}, "
                f"height={self.height}, width={self.width}, seed={self.seed})")

    def __getitem__(self, index):
        """Clip `index`: {'video': uint8 [T,H,W,3], 'label': int32 scalar}; deterministic."""
        index = int(index)
        if index < 0:
            index += self.num_videos
        if not 0 <= index < self.num_videos:
            raise IndexError(f"SyntheticVideos index {index} out of range [0, {self.num_videos})")
        rng = np.random.default_rng([self.seed, index])
        shape = int(rng.integers(len(SHAPES)))
        direction = int(rng.integers(len(DIRECTIONS)))
        video = self._render(rng, shape, direction)
        return {"video": video, "label": np.int32(label_of(shape, direction))}

    def _render(self, rng, shape, direction):
        """Draw one clip [T,H,W,3] uint8 for a given shape and direction."""
        T, H, W = self.num_frames, self.height, self.width
        size = float(min(H, W))
        t = self._ts[:, None, None]  # [T,1,1]
        frac = t / max(T - 1, 1)  # 0..1 over the clip, independent of T

        # Motion: the direction's angle with a small jitter; the path crosses ~35% of the frame.
        angle = direction * (np.pi / 2) + rng.uniform(-0.25, 0.25)
        travel = size * rng.uniform(0.28, 0.44)
        # math, not np: np.float64 scalars would promote the float32 grids to float64 (NEP 50).
        dx, dy = math.cos(angle) * travel, math.sin(angle) * travel
        cx0 = W / 2 - dx / 2 + rng.uniform(-0.1, 0.1) * W
        cy0 = H / 2 - dy / 2 + rng.uniform(-0.1, 0.1) * H
        cx = cx0 + dx * frac
        cy = cy0 + dy * frac

        # Rotation and scale change over the clip.
        theta = rng.uniform(0, 2 * np.pi) + rng.uniform(-1.5, 1.5) * frac
        # Large shapes (radius 25-40% of the frame): they, not the background, must carry most of
        # what there is to predict, or a JEPA learns the background colour and little else.
        radius = size * rng.uniform(0.25, 0.40) * (1.0 + rng.uniform(-0.35, 0.35) * frac)

        cos_t, sin_t = np.cos(theta), np.sin(theta)
        rx = self._xs - cx
        ry = self._ys - cy
        u = (rx * cos_t + ry * sin_t) / radius  # [T,H,W] local coordinates of the shape
        v = (-rx * sin_t + ry * cos_t) / radius
        dist = _shape_distance(shape, u, v)
        # Soft edge about one pixel wide keeps edges smooth and the mask non-binary.
        alpha = np.clip((1.0 - dist) * radius + 0.5, 0.0, 1.0)

        # Foreground texture in the shape's own frame, so it rotates and scales with the shape.
        fg_a = rng.uniform(0.4, 1.0, 3).tolist()
        fg_b = rng.uniform(0.0, 0.6, 3).tolist()
        freq = float(rng.uniform(2.0, 5.0)) * np.pi
        if rng.random() < 0.5:  # stripes
            pattern = 0.5 + 0.5 * np.sin(freq * u)
        else:  # checker-like
            pattern = 0.5 + 0.5 * np.sin(freq * u) * np.sin(freq * v)

        # Background: one static colour plus a faint low-frequency wave, predictable from any part
        # of the frame.
        bg_a = rng.uniform(0.0, 0.7, 3).tolist()
        bg_angle = float(rng.uniform(0, 2 * np.pi))
        ramp = ((self._xs * math.cos(bg_angle) + self._ys * math.sin(bg_angle)) / size)[0]
        ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)  # [H,W] in 0..1
        wave = 0.08 * np.sin(float(rng.uniform(2, 6)) * np.pi * ramp + float(rng.uniform(0, 6.3)))

        # One channel at a time: numpy broadcasting over a trailing axis of 3 is ~7x slower.
        video = np.empty((T, H, W, 3), np.uint8)
        for c in range(3):
            fg = fg_b[c] + (fg_a[c] - fg_b[c]) * pattern  # [T,H,W]
            bg = bg_a[c] + wave  # [H,W]
            video[..., c] = np.clip((bg + alpha * (fg - bg)) * 255.0 + 0.5, 0.0, 255.0)
        return video


def write_mp4(path, frames, fps=24, *, crf=10, preset="ultrafast", keyframe_interval=0):
    """Encode uint8 frames [T,H,W,3] (RGB, even H and W) to an H.264 mp4 at `path` with PyAV.

    The defaults favour speed and fidelity (tests); crf=23, preset='medium' (FFmpeg's defaults,
    with B-frames and CABAC) gives files that decode like typical downloaded videos, and
    keyframe_interval=48 to 125 (2 to 5 s) is what streaming sites use (0: x264's 250).
    """
    import av  # local import: only needed when writing files

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"write_mp4({path}): frames must be uint8 [T,H,W,3], "
                         f"got {frames.dtype} {frames.shape}")
    T, H, W, _ = frames.shape
    if T < 1 or H % 2 or W % 2:
        raise ValueError(f"write_mp4({path}): need T >= 1 and even H, W (yuv420p), "
                         f"got T={T} H={H} W={W}")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height = W, H
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset}
        if keyframe_interval:
            stream.options["g"] = str(int(keyframe_interval))
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush delayed frames


def write_dataset(directory, num_videos, *, num_frames=32, height=64, width=64, seed=0, fps=24,
                  csv_name="index.csv"):
    """Write `num_videos` generated mp4s and an official-format CSV (`path label`); return it."""
    directory = os.path.abspath(str(directory))
    os.makedirs(directory, exist_ok=True)
    source = SyntheticVideos(num_videos, num_frames, height, width, seed)
    lines = []
    for i in range(num_videos):
        item = source[i]
        path = os.path.join(directory, f"video_{i:06d}.mp4")
        write_mp4(path, item["video"], fps=fps)
        lines.append(f"{path} {int(item['label'])}\n")
    csv_path = os.path.join(directory, csv_name)
    with open(csv_path, "w") as f:
        f.writelines(lines)
    return csv_path
