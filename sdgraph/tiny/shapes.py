"""A captioned synthetic dataset of simple shapes, generated in code and deterministic from a seed.

Each sample is a 64x64 RGB picture of one shape (circle, square, triangle or star) of a named colour, size and
position on a named background colour, with:

- a caption such as "a large red circle on the left, blue background";
- its attribute labels (the classifier's targets and the evaluation's ground truth);
- an outline image (white strokes on black, the ControlNet conditioning, like a scribble);
- an "outline style" image: the same picture with the shape drawn as a coloured outline only (the LoRA's style);
- the filled shape mask (what a ControlNet-guided picture should cover).

Pictures are drawn at 4x resolution with Pillow and box-filtered down, so edges are antialiased.  Sample ``i`` of
seed ``s`` depends only on ``(s, i)``, so a dataset of any size is a prefix of a larger one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
SUPERSAMPLE = 4

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "orange": (245, 140, 20),
    "yellow": (240, 215, 30),
    "green": (40, 165, 60),
    "blue": (35, 80, 220),
    "purple": (140, 50, 180),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
}
FOREGROUNDS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple")
BACKGROUNDS: tuple[str, ...] = ("white", "black", "gray", "blue", "yellow")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "centre")
SIZES: tuple[str, ...] = ("small", "large")

POSITION_PHRASES: dict[str, str] = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}
# Unit direction of each position from the picture's centre (x right, y down).
POSITION_DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "top": (0, -1),
    "bottom": (0, 1),
    "centre": (0, 0),
}
SHAPE_EXTENT = {"small": 20, "large": 34}  # bounding-box side in pixels
POSITION_OFFSET = {"small": 18, "large": 14}  # distance of the shape's centre from the picture's centre
CENTRE_JITTER = 2  # pixels
COLOUR_JITTER = 12  # per channel, 0..255
OUTLINE_WIDTH = 2.0  # pixels, control image strokes
STYLE_WIDTH = 2.0  # pixels, outline-style strokes

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": FOREGROUNDS,
    "background": BACKGROUNDS,
    "position": POSITIONS,
    "size": SIZES,
}


@dataclass(frozen=True)
class ShapeLabels:
    """What a picture shows, by name."""

    shape: str
    colour: str
    background: str
    position: str
    size: str

    def index(self, attribute: str) -> int:
        """The class index of one attribute, in ATTRIBUTES order."""
        return ATTRIBUTES[attribute].index(getattr(self, attribute))


@dataclass
class ShapeSample:
    """One rendered sample; pictures are uint8 arrays [64, 64, 3], the mask uint8 [64, 64]."""

    labels: ShapeLabels
    caption: str
    image: np.ndarray
    outline: np.ndarray
    outline_style: np.ndarray
    mask: np.ndarray


@dataclass
class ShapeDataset:
    """Many samples stacked: pictures [N, 64, 64, 3] uint8, masks [N, 64, 64] uint8, labels as index arrays."""

    seed: int
    images: np.ndarray
    outlines: np.ndarray
    outline_styles: np.ndarray
    masks: np.ndarray
    captions: list[str]
    labels: list[ShapeLabels]
    label_indices: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.captions)


def article_for(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def make_caption(
    labels: ShapeLabels, *, size: bool = True, position: bool = True, background: bool = True
) -> str:
    """The caption of a sample; optional parts can be left out ("a red square" is a valid prompt too)."""
    words = ([labels.size] if size else []) + [labels.colour, labels.shape]
    caption = f"{article_for(words[0])} {' '.join(words)}"
    if position:
        caption += f" {POSITION_PHRASES[labels.position]}"
    if background:
        caption += f", {labels.background} background"
    return caption


def random_caption(labels: ShapeLabels, rng: np.random.Generator, full_probability: float = 0.6) -> str:
    """A caption variant for training: usually the full caption, otherwise with random optional parts left out."""
    if rng.random() < full_probability:
        return make_caption(labels)
    keep = rng.random(3) < 0.5
    return make_caption(labels, size=bool(keep[0]), position=bool(keep[1]), background=bool(keep[2]))


def sample_labels(rng: np.random.Generator) -> ShapeLabels:
    """Uniform attributes, with the shape's colour never equal to the background's."""
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    colours = [c for c in FOREGROUNDS if c != background]
    return ShapeLabels(
        shape=SHAPES[rng.integers(len(SHAPES))],
        colour=colours[rng.integers(len(colours))],
        background=background,
        position=POSITIONS[rng.integers(len(POSITIONS))],
        size=SIZES[rng.integers(len(SIZES))],
    )


def shape_centre(labels: ShapeLabels, jitter: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float]:
    dx, dy = POSITION_DIRECTIONS[labels.position]
    offset = POSITION_OFFSET[labels.size]
    half = IMAGE_SIZE / 2
    return half + dx * offset + jitter[0], half + dy * offset + jitter[1]


def shape_polygon(shape: str, cx: float, cy: float, extent: float) -> list[tuple[float, float]] | None:
    """Vertices of a polygonal shape in pixel coordinates, or None for the circle (drawn as an ellipse)."""
    r = extent / 2
    if shape == "circle":
        return None
    if shape == "square":
        s = r * 0.9  # a square looks larger than a circle of the same box
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        # Pointing up and filling its bounding box, so it stays inside the picture at every position.
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle) + r * 0.08))
        return points
    raise ValueError(f"unknown shape {shape!r}")


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    centre: tuple[float, float],
    extent: float,
    fill: tuple[int, ...] | int | None,
    outline: tuple[int, ...] | int | None,
    width: float,
) -> None:
    """Draw at SUPERSAMPLE resolution: all coordinates are given at 64x64 scale and scaled here."""
    scale = SUPERSAMPLE
    cx, cy = centre[0] * scale, centre[1] * scale
    stroke = max(1, round(width * scale)) if outline is not None else 0
    polygon = shape_polygon(shape, cx, cy, extent * scale)
    if polygon is None:
        r = extent * scale / 2
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=outline, width=stroke)
    else:
        draw.polygon(polygon, fill=fill, outline=outline, width=stroke)


def _downsample(image: Image.Image) -> np.ndarray:
    return np.asarray(image.reduce(SUPERSAMPLE))


def _jittered_colour(name: str, rng: np.random.Generator) -> tuple[int, int, int]:
    base = np.array(COLOURS[name], dtype=np.int64)
    shifted = np.clip(base + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3), 0, 255)
    return tuple(int(v) for v in shifted)  # type: ignore[return-value]


def render(labels: ShapeLabels, rng: np.random.Generator | None = None) -> ShapeSample:
    """Render one sample; ``rng`` jitters the centre and the colours slightly (none when omitted)."""
    if rng is None:
        jitter = (0.0, 0.0)
        fg, bg = COLOURS[labels.colour], COLOURS[labels.background]
    else:
        jitter = tuple(float(v) for v in rng.uniform(-CENTRE_JITTER, CENTRE_JITTER, size=2))
        fg, bg = _jittered_colour(labels.colour, rng), _jittered_colour(labels.background, rng)
    centre = shape_centre(labels, jitter)  # type: ignore[arg-type]
    extent = SHAPE_EXTENT[labels.size]
    big = IMAGE_SIZE * SUPERSAMPLE

    def canvas(mode: str, colour: tuple[int, ...] | int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        image = Image.new(mode, (big, big), colour)
        return image, ImageDraw.Draw(image)

    picture, draw = canvas("RGB", bg)
    _draw_shape(draw, labels.shape, centre, extent, fill=fg, outline=None, width=0)
    outline, draw = canvas("RGB", (0, 0, 0))
    _draw_shape(draw, labels.shape, centre, extent, fill=None, outline=(255, 255, 255), width=OUTLINE_WIDTH)
    styled, draw = canvas("RGB", bg)
    _draw_shape(draw, labels.shape, centre, extent, fill=None, outline=fg, width=STYLE_WIDTH)
    mask, draw = canvas("L", 0)
    _draw_shape(draw, labels.shape, centre, extent, fill=255, outline=None, width=0)
    return ShapeSample(
        labels=labels,
        caption=make_caption(labels),
        image=_downsample(picture),
        outline=_downsample(outline),
        outline_style=_downsample(styled),
        mask=_downsample(mask),
    )


def generate_sample(seed: int, index: int) -> ShapeSample:
    """Sample ``index`` of the dataset of ``seed``: independent of how many samples are generated."""
    rng = np.random.default_rng([seed, index])
    return render(sample_labels(rng), rng)


def generate_dataset(count: int, seed: int = 0, start: int = 0) -> ShapeDataset:
    """Samples ``start .. start+count-1`` of the dataset of ``seed``, stacked into arrays."""
    samples = [generate_sample(seed, start + i) for i in range(count)]
    labels = [s.labels for s in samples]
    return ShapeDataset(
        seed=seed,
        images=np.stack([s.image for s in samples]),
        outlines=np.stack([s.outline for s in samples]),
        outline_styles=np.stack([s.outline_style for s in samples]),
        masks=np.stack([s.mask for s in samples]),
        captions=[s.caption for s in samples],
        labels=labels,
        label_indices={
            name: np.array([lab.index(name) for lab in labels], dtype=np.int64) for name in ATTRIBUTES
        },
    )


def parse_caption(caption: str) -> dict[str, str]:
    """The attributes a caption names (possibly a subset); the inverse of make_caption for evaluation."""
    text = caption.lower()
    found: dict[str, str] = {}
    head, _, tail = text.partition(",")
    words = head.split()
    for name, values in (("shape", SHAPES), ("colour", FOREGROUNDS), ("size", SIZES)):
        for value in values:
            if value in words:
                found[name] = value
    for position, phrase in POSITION_PHRASES.items():
        if phrase in head:
            found["position"] = position
    for value in BACKGROUNDS:
        if f"{value} background" in tail:
            found["background"] = value
    return found


def image_grid(images: np.ndarray, columns: int = 8) -> Image.Image:
    """Tile uint8 pictures [N, H, W, 3] into one image (for looking at samples)."""
    count, height, width = images.shape[:3]
    rows = math.ceil(count / columns)
    grid = np.zeros((rows * height, columns * width, 3), dtype=np.uint8)
    for i, picture in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * height : (r + 1) * height, c * width : (c + 1) * width] = picture
    return Image.fromarray(grid)
