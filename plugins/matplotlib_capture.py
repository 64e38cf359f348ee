"""Built-in plugin: figures a block leaves open are captured as SVG, or PNG when the SVG is large.

Scatter plots of a few thousand points make SVGs of 1-3 MB (measured on the diffusion notes); past
`SVG_LIMIT` a 110-dpi PNG is 20-50x smaller and looks the same on the page.
"""

from __future__ import annotations

import base64
import io
import sys

from kernelnotes.plugins.hookspecs import hookimpl
from kernelnotes.results import Figure

SVG_LIMIT = 200_000  # bytes


@hookimpl
def collect_figures() -> list[Figure]:
    if "matplotlib.pyplot" not in sys.modules:
        return []  # never import matplotlib for a block that did not
    plt = sys.modules["matplotlib.pyplot"]
    figures = []
    for number in plt.get_fignums():
        fig = plt.figure(number)
        buffer = io.BytesIO()
        try:
            fig.savefig(buffer, format="svg", bbox_inches="tight")
            svg = buffer.getvalue()
        except Exception:
            svg = b""
        if svg and len(svg) <= SVG_LIMIT:
            figures.append(Figure("svg", svg.decode("utf-8")))
            continue
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight", dpi=110)
        figures.append(Figure("png", base64.b64encode(buffer.getvalue()).decode("ascii")))
    plt.close("all")
    return figures
