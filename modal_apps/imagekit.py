"""Image processing on Modal: render a Mandelbrot image, find its edges (Sobel), return
the edge map as a PNG and its statistics. Reports progress to the hub as rows finish.

    modal deploy modal_apps/imagekit.py      # needs the `modalhub` Modal secret

Locally, `make dev` loads this file into the hub's local executor (no Modal account).
"""

from __future__ import annotations

import base64
import math
import struct
import zlib

import modal

from modalhub_sdk import report_progress, report_to_hub

app = modal.App("imagekit")
image = (
    modal.Image.debian_slim(python_version="3.11")
    .pip_install("httpx")
    .add_local_python_source("modalhub_sdk")
)
hub = modal.Secret.from_name("modalhub")


def mandelbrot(width: int, height: int, max_iter: int) -> list[list[int]]:
    rows = []
    for y in range(height):
        ci = (y / height) * 2.4 - 1.2
        row = []
        for x in range(width):
            cr = (x / width) * 3.2 - 2.2
            zr = zi = 0.0
            n = 0
            while n < max_iter and zr * zr + zi * zi <= 4.0:
                zr, zi = zr * zr - zi * zi + cr, 2 * zr * zi + ci
                n += 1
            row.append(255 * n // max_iter)
        rows.append(row)
        if y % max(1, height // 10) == 0:
            report_progress(40 * y / height, "rendering")
    return rows


def sobel(pixels: list[list[int]]) -> list[list[int]]:
    height, width = len(pixels), len(pixels[0])
    out = [[0] * width for _ in range(height)]
    for y in range(1, height - 1):
        above, row, below = pixels[y - 1], pixels[y], pixels[y + 1]
        for x in range(1, width - 1):
            gx = (above[x + 1] + 2 * row[x + 1] + below[x + 1]) - (
                above[x - 1] + 2 * row[x - 1] + below[x - 1]
            )
            gy = (below[x - 1] + 2 * below[x] + below[x + 1]) - (
                above[x - 1] + 2 * above[x] + above[x + 1]
            )
            out[y][x] = min(255, int(math.hypot(gx, gy)))
        if y % max(1, height // 10) == 0:
            report_progress(40 + 50 * y / height, "edges")
    return out


def png(pixels: list[list[int]]) -> bytes:
    """An 8-bit grayscale PNG, written with the standard library."""
    height, width = len(pixels), len(pixels[0])
    raw = b"".join(b"\x00" + bytes(row) for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@app.function(image=image, secrets=[hub], timeout=600)
@report_to_hub(timeout=600)
def edges(width: int = 160, height: int = 120, max_iter: int = 60) -> dict[str, object]:
    if not (8 <= width <= 4096 and 8 <= height <= 4096):
        raise ValueError("width and height must be between 8 and 4096")
    edge_map = sobel(mandelbrot(width, height, max_iter))
    flat = [value for row in edge_map for value in row]
    report_progress(95, "encoding")
    return {
        "width": width,
        "height": height,
        "mean_edge": round(sum(flat) / len(flat), 3),
        "edge_pixels": sum(1 for value in flat if value > 64),
        "edges_png_base64": base64.b64encode(png(edge_map)).decode(),
    }
