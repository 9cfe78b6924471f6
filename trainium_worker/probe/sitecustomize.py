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


def _xla_counts() -> dict:
    """What XLA did so far: graphs compiled, executions, syncs, device-to-host transfers, and
    ops that fell back to the CPU (`aten::*` counters; `_local_scalar_dense` is `.item()`,
    counted as a transfer)."""
    if "torch_xla" not in sys.modules:
        return {}
    try:
        import torch_xla.debug.metrics as met

        def count(name):
            data = met.metric_data(name)
            return (int(data[0]), float(data[1])) if data else (0, 0.0)

        compiles, compile_ns = count("CompileTime")
        fallbacks = {c.removeprefix("aten::"): int(met.counter_value(c)) for c in met.counter_names()
                     if c.startswith("aten::") and c != "aten::_local_scalar_dense"}
        return {"compilations": compiles, "compile_time_s": round(compile_ns / 1e9, 3),
                "executions": count("ExecuteTime")[0], "mark_steps": int(met.counter_value("MarkStep") or 0),
                "transfers": count("TransferFromDeviceTime")[0], "fallbacks": fallbacks,
                "xla_tensors": int(met.counter_value("CreateXlaTensor") or 0)}
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {e}"[:300]}


def _write(extra: dict | None = None) -> None:
    path = os.environ.get("ANNAPURNA_PROBE_FILE")
    if not path:
        return
    try:
        report = _ran_on()
        xla = _xla_counts()
        if xla:
            report["xla"] = xla
        report.update(extra or {})
        with open(path, "w") as f:
            json.dump(report, f)
    except Exception:  # noqa: BLE001
        pass


def _report() -> None:
    _write()


atexit.register(_report)


def _watchdog(max_compiles: int, first_sync_s: float, max_transfers_per_step: float = -1,
              max_fallbacks: int = -1) -> None:
    """Preflight only: stop a program early when it is already clear it would burn trn1
    time compiling: too many graphs, or no sync (mark_step) long after XLA work began."""
    import threading
    import time

    def watch() -> None:
        xla_since = None  # when the program created its first XLA tensor
        while True:
            time.sleep(0.25)
            module = sys.modules.get("torch_xla")
            if module is None or getattr(getattr(module, "__spec__", None), "_initializing", False):
                continue  # not imported yet, or still importing in the program's thread
            xla = _xla_counts()
            if not xla or "error" in xla:
                continue
            why = None
            if xla["compilations"] > max_compiles:
                why = f"{xla['compilations']} graphs compiled, over the limit of {max_compiles}"
            if xla["xla_tensors"] and xla_since is None:
                xla_since = time.monotonic()
            if why is None and xla_since is not None and not xla["mark_steps"] and \
                    time.monotonic() - xla_since > first_sync_s:
                why = f"no mark_step within {first_sync_s:g} s of XLA work"
            steps = xla["mark_steps"]
            if why is None and max_transfers_per_step >= 0 and steps >= 5 and \
                    xla["transfers"] / steps > max_transfers_per_step:
                why = f"{xla['transfers'] / steps:.1f} device-to-host transfers per step over {steps} steps"
            fell_back = sum(xla["fallbacks"].values())
            if why is None and 0 <= max_fallbacks < fell_back:
                why = f"{fell_back} ops fell back to the CPU ({', '.join(sorted(xla['fallbacks']))})"
            if why:
                _write({"stopped": why})
                sys.stderr.write(f"annapurna preflight: stopped: {why}\n")
                sys.stderr.flush()
                os._exit(86)

    threading.Thread(target=watch, name="annapurna-preflight-watchdog", daemon=True).start()


if os.environ.get("ANNAPURNA_PREFLIGHT_MAX_COMPILES"):
    try:
        _watchdog(int(os.environ["ANNAPURNA_PREFLIGHT_MAX_COMPILES"]),
                  float(os.environ.get("ANNAPURNA_PREFLIGHT_FIRST_SYNC_S", "30")),
                  float(os.environ.get("ANNAPURNA_PREFLIGHT_MAX_TRANSFERS_PER_STEP", "-1")),
                  int(os.environ.get("ANNAPURNA_PREFLIGHT_MAX_FALLBACKS", "-1")))
    except Exception:  # noqa: BLE001
        pass


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
