"""What generated programs really get wrong, found in their source before anything runs,
each with its line. Blocking findings send the program back to the model; advisory ones
are recorded on the code version (they conflict with today's device-selection contract,
which falls back from torch_xla to CUDA to CPU, and become blocking with the XLA preflight).
"""

from __future__ import annotations

import ast

from pydantic import BaseModel

from trainium_worker.analysis import parse_code, training_loops

ALLOWED_IMPORTS = {
    "torch", "torch_xla", "torch_neuronx", "numpy", "math", "random", "json", "time", "os", "sys", "dataclasses",
    "typing", "itertools", "functools", "collections", "statistics", "copy", "re", "enum", "abc", "pathlib",
    "argparse", "string", "operator", "contextlib", "warnings", "__future__",
}
NETWORK_MODULES = {"urllib", "urllib2", "urllib3", "http", "socket", "requests", "httpx", "aiohttp", "ftplib", "wget",
                   "smtplib", "ssl"}
PROCESS_MODULES = {"subprocess", "pip", "multiprocessing", "pty"}
OS_PROCESS = {"system", "popen", "execv", "execve", "execvp", "execl", "execlp", "spawnv", "spawnl", "fork", "forkpty"}
SYNC_CALLS = {"mark_step", "sync", "optimizer_step"}  # xm.mark_step(), torch_xla.sync(), xm.optimizer_step(...)


class Finding(BaseModel):
    line: int
    rule: str
    message: str
    blocking: bool = True

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


def dotted(node: ast.AST) -> str:
    """`torch.cuda.is_available` for the attribute chain, '' when it is not a plain chain."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return ""


def _is_cuda_string(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.strip().lower().startswith("cuda")


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module]
    return []


def _in_print(tree: ast.AST) -> set[int]:
    """ids of nodes inside the arguments of a print(...) call."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                inside |= {id(n) for n in ast.walk(arg)}
    return inside


def _guarded_xla_imports(tree: ast.AST) -> list[ast.Try]:
    """try: import torch_xla ... except ...: <fall back>"""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and node.handlers and any(
                name.startswith("torch_xla") for stmt in node.body for sub in ast.walk(stmt) for name in _imported(sub)):
            found.append(node)
    return found


def check_program(code: str) -> list[Finding]:
    """Every finding, in line order. Never raises: a program too deep to parse is a finding."""
    try:
        tree = parse_code(code)
    except SyntaxError as e:
        return [Finding(line=e.lineno or 0, rule="syntax", message=f"does not parse: {e.msg}")]
    except (RecursionError, MemoryError, ValueError, SystemError) as e:
        return [Finding(line=0, rule="syntax", message=f"does not parse: {type(e).__name__} (nested too deeply?)")]
    findings: list[Finding] = []

    def add(node: ast.AST, rule: str, message: str, blocking: bool = True) -> None:
        findings.append(Finding(line=getattr(node, "lineno", 0), rule=rule, message=message, blocking=blocking))

    try:
        nodes = list(ast.walk(tree))
    except RecursionError:  # ast.walk is iterative; kept for safety on exotic trees
        return [Finding(line=0, rule="syntax", message="too deeply nested to check")]
    printed = _in_print(tree)
    metrics_in_print = metrics_anywhere = False
    uses_xla_device = False
    for node in nodes:
        for name in _imported(node):
            top = name.split(".")[0]
            if top in NETWORK_MODULES:
                add(node, "network", f"imports {name!r}: programs have no network; never download")
            elif top in PROCESS_MODULES:
                add(node, "process", f"imports {name!r}: programs run no other processes")
            elif top not in ALLOWED_IMPORTS:
                add(node, "import", f"imports {name!r} (allowed: torch, numpy and the standard library)")
        if isinstance(node, ast.Attribute) and dotted(node).startswith("torch.hub"):
            add(node, "hub", "torch.hub downloads weights: use synthetic data or $ANNAPURNA_DATA_DIR")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if "METRICS:" in node.value:
                metrics_anywhere = True
                metrics_in_print |= id(node) in printed
            if "pip install" in node.value:
                add(node, "process", "runs pip: programs install nothing")
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        attr = node.func.attr if isinstance(node.func, ast.Attribute) else ""
        if attr == "cuda":
            add(node, "cuda", "hard-coded .cuda(); pick the device instead")
        elif attr == "to" and any(_is_cuda_string(a) for a in [*node.args, *(k.value for k in node.keywords)]):
            add(node, "cuda", "hard-coded .to('cuda'); pick the device instead")
        if name == "torch.device" and node.args and _is_cuda_string(node.args[0]):
            add(node, "cuda", "hard-coded torch.device('cuda')", blocking=False)
        if name.startswith("torch.cuda."):
            fallback = name == "torch.cuda.is_available"
            add(node, "cuda", f"calls {name}(): on trn1 there is no CUDA" + (" (the device fallback)" if fallback else ""),
                blocking=not fallback)
        if name.startswith("os.") and attr in OS_PROCESS:
            add(node, "process", f"calls {name}(): programs run no other processes")
        if any(k.arg == "download" and isinstance(k.value, ast.Constant) and k.value.value is True for k in node.keywords):
            add(node, "network", "download=True: programs have no network; use synthetic data or $ANNAPURNA_DATA_DIR")
        if attr == "xla_device" or name in ("torch_xla.device", "xm.xla_device"):
            uses_xla_device = True
    loops = training_loops(tree)
    if not loops:
        add(tree, "training", "no training loop (a loop calling loss.backward() and optimizer.step())")
    if not metrics_anywhere:
        add(tree, "metrics", "never prints a `METRICS: {json}` line")
    elif not metrics_in_print:
        add(tree, "metrics", "`METRICS:` appears only outside print calls: the worker reads printed lines")
    if not uses_xla_device:
        add(tree, "xla", "never selects the XLA device (xm.xla_device() / torch_xla.device())", blocking=False)
    for guard in _guarded_xla_imports(tree):
        add(guard, "xla", "import torch_xla falls back on failure: on trn1 that hides a broken Neuron install",
            blocking=False)
    if uses_xla_device:
        inner = {id(sub) for loop in loops for sub in ast.walk(loop) if sub is not loop}
        for loop in (n for n in loops if id(n) not in inner):  # the outermost training loops
            calls = {c.func.attr for c in ast.walk(loop) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)}
            calls |= {c.func.id for c in ast.walk(loop) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
            if not calls & SYNC_CALLS:
                add(loop, "xla", "the training loop never calls xm.mark_step() / torch_xla.sync(): one giant graph",
                    blocking=False)
    return sorted(findings, key=lambda f: f.line)
