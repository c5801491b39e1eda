"""CPU seconds (process time, one thread) of the localization head alone, forward + backward, batch 32, at 128 and 64 px.

OMP_NUM_THREADS=1 python benchmarks/localization_head_cost.py
"""

import time

import torch

torch.set_num_threads(1)
from medmodal.models.localization import LocalizationHead

for px in (128, 64):
    for stride, hidden in ((8, 64), (4, 32), (4, 64)):
        torch.manual_seed(0)
        head = LocalizationHead(grid_dim=128, context_dim=256, num_labels=6, hidden_dim=hidden, stride=stride)
        grid, ctx, img = (
            torch.randn(32, 128, px // 16, px // 16),
            torch.randn(32, 256),
            torch.randn(32, 1, px, px),
        )
        times = []
        for _ in range(6):
            t = time.process_time()
            out = head(grid, ctx, img)
            (out.heatmaps.mean() + out.log_sizes.mean() + out.offsets.mean()).backward()
            times.append(time.process_time() - t)
        times.sort()
        print(
            f"{px} px stride {stride} hidden {hidden}: median {times[3]:.3f} CPU-s per batch of 32 (fwd+bwd), params {sum(p.numel() for p in head.parameters())}"
        )
