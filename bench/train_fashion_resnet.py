"""Reproduce the shipped fashion-resnet weights (neurflow/data/fashion-resnet.pt, issue 13).

    nice -n 19 python bench/train_fashion_resnet.py --out /tmp/fashion-resnet.pt

Trains `FashionResNet()` (the default architecture) with `neurflow.train.train`'s recipe (seed 0,
5 epochs, AdamW + one-cycle at 1e-2, batch 256, no augmentation, bf16 autocast on CPUs with native
bf16) on ONE thread, writes the state dict to --out and a JSON sidecar beside it, and prints the
file's sha256 next to the shipped one (`fashion_resnet.WEIGHTS_SHA256`).  Training is deterministic
on one thread; bit-identical weights need the same torch build and CPU kernels (the shipped file:
torch 2.14.1, AVX512-BF16 CPU), and torch.save's bytes depend on the file's name, so write to a
file named fashion-resnet.pt to compare checksums.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from neurflow.images import file_hash  # noqa: E402
from neurflow.models import fashion_resnet  # noqa: E402
from neurflow.train import train  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="where to write the state dict (name it fashion-resnet.pt)")
    p.add_argument("--threads", type=int, default=1, help="1 reproduces the shipped file; more is not deterministic-safe")
    args = p.parse_args(argv)
    model, info = train(make_model=fashion_resnet.FashionResNet, name="fashion-resnet", threads=args.threads)
    out = Path(args.out)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, out)
    info.update(architecture={"channels": list(fashion_resnet.CHANNELS), "strides": list(fashion_resnet.STRIDES),
                              "stem_stride": fashion_resnet.STEM_STRIDE}, sha256=file_hash(str(out)))
    out.with_suffix(".json").write_text(json.dumps(info, indent=2, sort_keys=True))
    same = "same as" if info["sha256"] == fashion_resnet.WEIGHTS_SHA256 else "differs from"
    print(f"test accuracy {info['test_accuracy']:.4f}  seconds {info['seconds']}  sha256 {info['sha256']} "
          f"({same} the shipped {fashion_resnet.WEIGHTS_SHA256[:12]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
