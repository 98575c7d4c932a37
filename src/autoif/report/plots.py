"""The report's plots: matplotlib figures as SVG data URIs.

An SVG in an `<img src="data:...">` is self-contained (no network), sharp in print, and isolated
from the page (ids inside one SVG cannot clash with another's). The object API (`Figure`) is used
instead of pyplot, so rendering touches no global figure state.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import require

COLOR = "#2f6fb0"
LIGHT = "#c9d6e6"
THRESHOLD = "#b3261e"
# Fixed so the same run renders to the same bytes (matplotlib salts SVG ids randomly otherwise).
_RC = {
    "svg.hashsalt": "autoif-report",
    "svg.fonttype": "path",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


@dataclass(frozen=True)
class Threshold:
    value: float
    label: str  # e.g. "keep > 0.5"


def _figure(width: float, height: float):
    mpl = require("matplotlib", "report", "the run report's plots")
    from matplotlib.figure import Figure

    return mpl, Figure(figsize=(width, height), dpi=100, layout="constrained")


def _data_uri(mpl, fig) -> str:
    buf = io.BytesIO()
    with mpl.rc_context(_RC):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def histogram(
    values: Sequence[float], *, title: str, xlabel: str, edges: Sequence[float], threshold: Threshold | None = None
) -> str:
    """A histogram over fixed bin edges, with the keep threshold as a dashed line."""
    mpl, fig = _figure(4.6, 3.0)
    with mpl.rc_context(_RC):
        ax = fig.add_subplot()
        ax.hist(list(values), bins=list(edges), color=COLOR, edgecolor="white", linewidth=0.8)
        ax.set_xlim(edges[0], edges[-1])
        ax.set_title(f"{title} (n={len(values):,})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("count")
        if threshold is not None:
            ax.axvline(threshold.value, color=THRESHOLD, linestyle="--", linewidth=1.2, label=threshold.label)
            fig.legend(loc="outside upper right", frameon=False)
    return _data_uri(mpl, fig)


def funnel(stages: Sequence[str], records_in: Sequence[int], records_out: Sequence[int]) -> str:
    """Records in and out of each stage, first stage at the top."""
    mpl, fig = _figure(7.2, 0.42 * len(stages) + 1.0)
    with mpl.rc_context(_RC):
        ax = fig.add_subplot()
        ys = list(range(len(stages)))
        ax.barh(ys, records_in, color=LIGHT, height=0.8, label="in")
        bars = ax.barh(ys, records_out, color=COLOR, height=0.5, label="out")
        ax.bar_label(bars, labels=[f"{n:,}" for n in records_out], padding=3, fontsize=8)
        ax.set_yticks(ys, labels=list(stages))
        ax.invert_yaxis()
        ax.set_xlabel("records (the unit is each stage's own: instructions, prompts, training records)")
        ax.set_xlim(0, max([*records_in, *records_out, 1]) * 1.12)
        fig.legend(loc="outside upper right", ncols=2, frameon=False)
    return _data_uri(mpl, fig)
