"""How far may a GPU's NN4 gradient lie from the CPU's? A CPU-only yardstick.

    python scripts/nn4_gradient_noise.py

NN4 (norm=batchnorm, random init, training mode) on 16 random 96-px inputs, loss
``sum((embedding . probe)^2)``: the cosine between the clean fp32 gradient and (a) the float64
gradient, (b) gradients with Gaussian noise of a relative size ``s`` (times each output's std)
added to every conv/linear output — a stand-in for TF32 (~1e-3) or bf16 (~4e-3) arithmetic.
``tests/cuda`` compares the GPU's gradient with the CPU's; this says what agreement to expect.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facenet.models import create_model


def gradient(model: nn.Module, x: torch.Tensor, probe: torch.Tensor, noise: float = 0.0):
    g = torch.Generator().manual_seed(0)
    hooks = []
    if noise:
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                hooks.append(
                    m.register_forward_hook(
                        lambda _m, _i, o: (
                            o + noise * o.detach().std() * torch.randn(o.shape, generator=g).to(o)
                        )
                    )
                )
    model.zero_grad(set_to_none=True)
    (model(x) @ probe).pow(2).sum().backward()
    for h in hooks:
        h.remove()
    return torch.cat([p.grad.flatten().double() for p in model.parameters()])


def main() -> None:
    torch.manual_seed(0)
    model = create_model("nn4", norm="batchnorm").train()
    x = torch.randn(16, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    probe = torch.randn(128, generator=torch.Generator().manual_seed(2))
    clean = gradient(model, x, probe)
    print("| comparison with the clean fp32 gradient | cosine |\n|---|---:|")
    ref64 = gradient(model.double(), x.double(), probe.double())
    model.float()
    print(f"| float64 | {F.cosine_similarity(clean, ref64, dim=0):.6f} |")
    for noise in (1e-6, 1e-4, 1e-3, 4e-3):
        cos = F.cosine_similarity(clean, gradient(model, x, probe, noise), dim=0)
        print(f"| noise {noise:g} on every conv/linear output | {cos:.4f} |")


if __name__ == "__main__":
    main()
