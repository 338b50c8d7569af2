"""Cost of the winners' blocks on this CPU: train and inference images/s (bf16 + channels_last, batch 32)
of the U-Net with each block switched on, so a recipe for a time budget can weigh them.

Usage:
    python benchmarks/model_cost.py
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import torch
from speed import infer_rate, train_rate

from saltseg.models import ModelConfig, create_model

HALF = [128, 64, 32, 16, 8]
PLAIN = {"arch": "unet", "attention": None, "hypercolumn": False, "deep_supervision": False}
VARIANTS = {
    "resnet18 plain (decoder 256-128-64-32-16)": {"encoder": "resnet18"},
    "resnet18, half decoder (128-64-32-16-8)": {"encoder": "resnet18", "decoder_channels": HALF},
    "resnet18, quarter decoder (64-32-16-8-4)": {
        "encoder": "resnet18",
        "decoder_channels": [64, 32, 16, 8, 4],
    },
    "resnet34, half decoder": {"encoder": "resnet34", "decoder_channels": HALF},
    "resnet18, half decoder + deep supervision": {
        "encoder": "resnet18",
        "decoder_channels": HALF,
        "deep_supervision": True,
    },
    "resnet18 + scSE": {"encoder": "resnet18", "attention": "scse"},
    "resnet18 + hypercolumn": {"encoder": "resnet18", "hypercolumn": True},
    "resnet18 + deep supervision": {"encoder": "resnet18", "deep_supervision": True},
    "resnet34 plain": {"encoder": "resnet34"},
    "resnet34 + scSE + hypercolumn + deep supervision": {
        "encoder": "resnet34",
        "attention": "scse",
        "hypercolumn": True,
        "deep_supervision": True,
    },
}


def main() -> None:
    torch.manual_seed(0)
    rows = []
    for name, upd in VARIANTS.items():
        model = create_model(ModelConfig(**{**PLAIN, **upd}))
        row = {
            "variant": name,
            "train_img_s": round(train_rate(model, True, 32, 6), 1),
            "infer_img_s": round(infer_rate(model, True, 64, 6), 1),
        }
        rows.append(row)
        print(row, flush=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M")
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"model_cost-{stamp}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
