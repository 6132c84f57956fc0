"""Consistent teaching (``distill.online``): the teacher embeds each step's faces as augmented
for the student, and those embeddings are the step's distillation targets.

With cached targets the student learns one fixed target per face for every distorted copy of
it (crops, rotations, low resolution, erasing); from ~10^4 faces that saturates within a few
epochs. Here each augmented copy gets the teacher's own answer, so every step brings new
(input, target) pairs (Beyer et al., "Knowledge distillation: a good teacher is patient and
consistent", CVPR 2022). The cached clean faces still fix the projection into the student's
dimension and any harmonic rotation (``TeacherTargets.transform``), so the targets live in the
frame the rest of the run uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from facenet.config import Config
from facenet.models.inference import inference_network
from facenet.preprocess import ModelSpec, normalize
from facenet.train import distributed as D
from facenet.train.model_setup import load_reference
from facenet.train.teacher import TeacherTargets


@dataclass(frozen=True)
class OnlineTeacher:
    """The teacher as each step runs it.

    Attributes:
        network: the teacher's inference network (``distill.backend``), frozen.
        spec: the teacher's input contract.
        transform: (D_teacher, D_student) float32 map into the targets' frame.
        batch_size: faces per teacher pass.
        device: where ``network`` runs (ONNX Runtime: the CPU).
        channels_last: feed ``network`` channels-last batches (the torch backend's layout).
    """

    network: nn.Module
    spec: ModelSpec
    transform: Tensor
    batch_size: int
    device: torch.device
    channels_last: bool = False

    def __call__(self, images: Tensor, out: torch.device | None = None) -> Tensor:
        """float (n, 3, s, s) RGB in [0, 255] (the step's augmented square faces, before the
        student's normalisation; a non-square student sees their centre window) ->
        (n, D_student) unit targets, on ``out`` (default: where ``images`` are)."""
        h, w = (int(s) for s in self.spec.input_size)
        x = images.to(self.device, torch.float32)
        if tuple(x.shape[-2:]) != (h, w):
            # why: antialiased when shrinking, as the cached faces' INTER_AREA resize
            shrink = h < x.shape[-2] or w < x.shape[-1]
            x = nn.functional.interpolate(
                x, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink
            )
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        chunks = []
        with torch.inference_mode():
            for chunk in x.split(self.batch_size):
                e = self.network(normalize(chunk, self.spec).contiguous(memory_format=fmt))
                chunks.append(nn.functional.normalize(e.float(), dim=1) @ self.transform)
        # (cat and normalize run outside inference mode: an ordinary tensor)
        targets = nn.functional.normalize(torch.cat(chunks), dim=1)
        return targets.to(out if out is not None else images.device)


def build_online_teacher(
    config: Config, targets: TeacherTargets, info: D.DistInfo
) -> OnlineTeacher | None:
    """``distill.online``'s teacher (None when off), mapping into the frame of ``targets``
    (the run's cached targets, after any harmonic rotation). Under torchrun rank 0 builds it
    first (an ONNX Runtime teacher is exported once, then read by the others)."""
    d = config.distill
    if not (d.teacher and d.online):
        return None
    teacher = load_reference("distill.teacher", d.teacher).eval()
    torch_backend = d.backend == "torch"
    run_on = info.device if torch_backend else torch.device("cpu")
    network = None
    if info.is_main:
        network = inference_network(teacher, d.backend)
    D.barrier()
    if network is None:
        network = inference_network(teacher, d.backend)
    return OnlineTeacher(
        network=network.to(run_on) if torch_backend else network,
        spec=teacher.spec,
        transform=targets.transform.float().to(run_on),
        batch_size=int(d.batch_size),
        device=run_on,
        channels_last=torch_backend,
    )
