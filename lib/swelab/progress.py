"""Progress bars: tqdm's notebook widget in Jupyter, plain text lines where nobody sees a widget.

`swelab run` executes the notebooks headlessly and streams their output to the terminal; a widget would show
there as nothing at all, so the CLI sets SWELAB_PLAIN_PROGRESS=1 for the kernels it starts and the bars are text.
"""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm as auto_tqdm
from tqdm.std import tqdm as text_tqdm

PLAIN_PROGRESS = "SWELAB_PLAIN_PROGRESS"


def tqdm(*args, **kwargs):  # noqa: ANN002, ANN003 - tqdm's own signature
    """tqdm.auto's bar, or a text bar on stderr when the output is streamed to a terminal by `swelab run`."""
    if os.environ.get(PLAIN_PROGRESS):
        kwargs.setdefault("file", sys.stderr)
        kwargs.setdefault("mininterval", 1.0)
        return text_tqdm(*args, **kwargs)
    return auto_tqdm(*args, **kwargs)


tqdm.write = auto_tqdm.write  # type: ignore[attr-defined]
