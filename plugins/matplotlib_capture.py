"""Built-in plugin: figures a block leaves open are captured as SVG (PNG when SVG fails)."""

from __future__ import annotations

import base64
import io
import sys

from kernelnotes.plugins.hookspecs import hookimpl
from kernelnotes.results import Figure


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
            figures.append(Figure("svg", buffer.getvalue().decode("utf-8")))
        except Exception:
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", bbox_inches="tight", dpi=110)
            figures.append(Figure("png", base64.b64encode(buffer.getvalue()).decode("ascii")))
    plt.close("all")
    return figures
