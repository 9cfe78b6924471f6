"""The pull step of every deployment: a flow run starts in this machine's own checkout of
Annapurna, not in the directory `prefect deploy` ran in on some other machine.

The checkout is `ANNAPURNA_CHECKOUT` when set (the trn1 bootstrap writes it into the
worker's environment), else the checkout this package is installed from.
"""

from __future__ import annotations

import os
from pathlib import Path


def enter_checkout(directory: str | None = None) -> dict[str, str]:
    path = Path(directory or os.environ.get("ANNAPURNA_CHECKOUT") or Path(__file__).resolve().parents[1]).expanduser()
    if not (path / "prefect.yaml").is_file():
        raise ValueError(f"{path} is not an Annapurna checkout (no prefect.yaml): set ANNAPURNA_CHECKOUT "
                         "in the worker's environment to the checkout the flows should run from")
    os.chdir(path)
    return {"directory": str(path)}
