"""Put on a program's PYTHONPATH by the worker: at exit, records which device the program
really computed on, so the result does not take the program's word for it.

- XLA: torch_xla was imported and its metrics count executed computations; the PJRT device
  type says whether they ran on a NeuronCore (or an XLA CPU/GPU device).
- CUDA: torch initialised CUDA and allocated memory on a GPU.
- otherwise CPU.

It never imports torch itself and never raises: a program it watches behaves as without it.
A program that sets out to forge this report can (it runs in the same process); the probe
catches honest fallbacks: a hard-coded "cuda", a failed `import torch_xla`, a CPU default.
"""

import atexit
import json
import os
import sys


def _xla_executions(met) -> int:
    runs = 0
    for name in met.metric_names():
        if "Execute" in name:
            data = met.metric_data(name)
            runs += int(data[0]) if data else 0
    return runs


def _ran_on() -> dict:
    if "torch_xla" in sys.modules:
        try:
            import torch_xla.debug.metrics as met

            runs = _xla_executions(met)
            if runs:
                try:
                    import torch_xla.runtime as xr

                    kind = str(xr.device_type())
                except Exception:  # noqa: BLE001 - older torch_xla
                    kind = os.environ.get("PJRT_DEVICE", "xla")
                name = "neuron" if kind.upper() == "NEURON" else f"xla:{kind.lower()}"
                return {"ran_on": name, "xla_executions": runs}
        except Exception as e:  # noqa: BLE001
            return {"ran_on": "cpu", "probe_error": f"torch_xla metrics unreadable: {e}"[:300]}
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_initialized():
                peak = max((torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())), default=0)
                if peak > 0:
                    return {"ran_on": "cuda", "cuda_peak_bytes": int(peak)}
        except Exception:  # noqa: BLE001
            pass
    return {"ran_on": "cpu"}


def _report() -> None:
    path = os.environ.get("ANNAPURNA_PROBE_FILE")
    if not path:
        return
    try:
        with open(path, "w") as f:
            json.dump(_ran_on(), f)
    except Exception:  # noqa: BLE001
        pass


atexit.register(_report)


def _chain() -> None:
    """Run the sitecustomize this one shadows (a distribution's or a venv's), if any."""
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        candidate = os.path.join(entry or ".", "sitecustomize.py")
        if os.path.abspath(entry or ".") != here and os.path.isfile(candidate):
            try:
                spec = importlib.util.spec_from_file_location("_shadowed_sitecustomize", candidate)
                spec.loader.exec_module(importlib.util.module_from_spec(spec))
            except Exception:  # noqa: BLE001 - theirs failing must not fail the program
                pass
            return


_chain()
