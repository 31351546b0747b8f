"""Where training left the norms' parameters: each BN's and MPBN's scale and shift, and MPBN's
running statistics, per layer of trained checkpoints (issue 18's explanation of its T = 1
ablation, docs/RESULTS.md).

    python scripts/norm_params.py NAME=CHECKPOINT [NAME=CHECKPOINT ...] --out DIR

Writes DIR/norm_params.json (per checkpoint and tensor: shape, mean, std, min, max, and the
largest distance from the value it was initialized to) and DIR/norm_params.md (one table per
checkpoint). Reads the checkpoints only (no data, no model built).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpbn.engine.checkpoint import CheckpointError, load_checkpoint  # noqa: E402

#: The tensors reported, by the end of their state-dict name, and the value each starts at
#: (``None``: running statistics, which start at 0 and 1 but are estimates, not parameters).
TENSORS = {"norm.weight": 1.0, "norm.bias": 0.0, "membrane_norm.weight": 1.0,
           "membrane_norm.bias": 0.0, "membrane_norm.running_mean": None,
           "membrane_norm.running_var": None}
_PATTERN = re.compile(r"(^|\.)(" + "|".join(re.escape(k) for k in TENSORS) + r")$")


def summarize(state: dict[str, torch.Tensor]) -> list[dict]:
    """One row per reported tensor of ``state``, in state-dict order."""
    rows = []
    for name, tensor in state.items():
        match = _PATTERN.search(name)
        if match is None or not tensor.is_floating_point():
            continue
        kind = match.group(2)
        t = tensor.detach().double().flatten()
        start = TENSORS[kind]
        rows.append({
            "tensor": name, "kind": kind, "shape": list(tensor.shape),
            "mean": t.mean().item(), "std": t.std().item() if t.numel() > 1 else 0.0,
            "min": t.min().item(), "max": t.max().item(),
            "max_moved": None if start is None else (t - start).abs().max().item(),
        })
    return rows


def run_and_seed(path: str) -> str:
    """``RUN/seed_N/last.pt`` as ``RUN/seed_N`` (the machine's own folders left out)."""
    return "/".join(Path(path).resolve().parts[-3:-1])


def markdown(name: str, path: str, epoch: int | None, rows: list[dict]) -> str:
    lines = [f"### {name}", "", f"`{run_and_seed(path)}`, after epoch {epoch}", "",
             "| tensor | shape | mean | std | min | max | largest move from its start |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        moved = "-" if r["max_moved"] is None else f"{r['max_moved']:.2e}"
        lines.append(f"| {r['tensor']} | {'x'.join(map(str, r['shape']))} | {r['mean']:.3f} | "
                     f"{r['std']:.3f} | {r['min']:.3f} | {r['max']:.3f} | {moved} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", metavar="NAME=CHECKPOINT")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    named = []
    for item in args.checkpoints:
        name, sep, path = item.partition("=")
        if not sep or not name or not Path(path).is_file():
            parser.error(f"{item!r}: give NAME=CHECKPOINT with an existing checkpoint file")
        named.append((name, path))
    report, pages = {}, ["# Norm parameters of trained checkpoints", "",
                         "Written by `python scripts/norm_params.py " + " ".join(
                             f"{n}=RUNS/{run_and_seed(p)}/{Path(p).name}" for n, p in named)
                         + " --out DIR` (RUNS: where the runs were trained). `norm.*`: the BN "
                         "after each conv (MPBN Eq. 4-5); `membrane_norm.*`: MPBN (Eq. 6-7).", ""]
    for name, path in named:
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as error:
            parser.error(str(error))
        state = ckpt.get("train_model", ckpt["model"])  # the trained weights, not an average
        rows = summarize(state)
        epoch = ckpt.get("epoch")
        report[name] = {"checkpoint": run_and_seed(path), "epoch": epoch, "tensors": rows}
        pages.append(markdown(name, path, epoch, rows))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "norm_params.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "norm_params.md").write_text("\n".join(pages))
    print(f"wrote {args.out / 'norm_params.md'} and norm_params.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
