"""Stage 2, diffusion augmentation with diffusers, SDEdit-style (Meng et al. 2022).

Each synthetic image is noised to an intermediate step set by ``strength`` (0 = itself,
1 = pure noise) with the scheduler's ``add_noise``, then denoised back by the UNet with
DDIM steps; different noise draws give different variants.

Where the denoiser comes from must stay data-free: the embedded default is a small
``UNet2DModel`` trained here on the synthetic bank only (:func:`train_denoiser`). A user
with a pretrained unconditional diffusers pipeline (a hub id or a local folder holding a
``unet`` and a ``scheduler``, e.g. a DDPM/DDIM pipeline) loads it with
:meth:`SDEditAugmenter.from_pretrained` and the same code path uses it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline, UNet2DModel


def small_unet(channels: int, size: int) -> UNet2DModel:
    """A two-level UNet for small images (8 px digits up to 32 px CIFAR)."""
    return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, layers_per_block=1,
                       block_out_channels=(32, 64), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8, attention_head_dim=8)


def train_denoiser(unet: UNet2DModel, images: torch.Tensor, epochs: int = 50, batch_size: int = 64,
                   lr: float = 1e-3, num_train_timesteps: int = 1000, seed: int = 0) -> tuple[DDIMScheduler, list[float]]:
    """DDPM noise-prediction training of ``unet`` on ``images`` in [0, 1] (the synthetic bank);
    returns the DDIM scheduler to sample with and the loss per epoch."""
    scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr)
    x0_all = images * 2 - 1
    history = []
    unet.train()
    for _ in range(epochs):
        total = 0.0
        for batch in torch.randperm(len(images), generator=generator).split(batch_size):
            x0 = x0_all[batch.to(images.device)]
            noise = torch.randn(x0.shape, generator=generator).to(x0.device)
            t = torch.randint(0, num_train_timesteps, (len(x0),), generator=generator).to(x0.device)
            loss = F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, noise)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(x0)
        history.append(total / len(images))
    unet.eval()
    return DDIMScheduler.from_config(scheduler.config), history


class SDEditAugmenter:
    """Variants of images by partial noising and DDIM denoising.

    Parameters
    ----------
    unet : a diffusers ``UNet2DModel`` (noise prediction) for the images' shape.
    scheduler : a diffusers scheduler with ``set_timesteps``, ``add_noise`` and ``step``.
    strength : share of the diffusion the images are noised to, in (0, 1].
    inference_steps : DDIM steps over the whole diffusion (about strength x this are run).
    """

    def __init__(self, unet: UNet2DModel, scheduler, strength: float = 0.3, inference_steps: int = 50) -> None:
        if not 0 < strength <= 1:
            raise ValueError(f"strength={strength}; accepted: (0, 1]")
        self.unet, self.scheduler = unet, scheduler
        self.strength, self.inference_steps = strength, inference_steps

    @classmethod
    def from_pretrained(cls, name_or_path: str, strength: float = 0.3, inference_steps: int = 50,
                        device: torch.device | None = None) -> SDEditAugmenter:
        """Use a pretrained diffusers pipeline's ``unet`` and ``scheduler`` (hub id or local
        folder; only files already on disk when offline)."""
        pipeline = DiffusionPipeline.from_pretrained(name_or_path)
        if not isinstance(getattr(pipeline, "unet", None), UNet2DModel) or not hasattr(pipeline, "scheduler"):
            raise ValueError(f"{name_or_path!r} is a {type(pipeline).__name__}; accepted: an unconditional "
                             "diffusers pipeline with a UNet2DModel `unet` and a `scheduler` (e.g. DDPM/DDIM)")
        scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
        return cls(pipeline.unet.to(device or "cpu").eval(), scheduler, strength, inference_steps)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, variants: int = 1, generator: torch.Generator | None = None,
                 batch_size: int = 256) -> torch.Tensor:
        """``images`` [N, C, H, W] in [0, 1] -> variants [N, variants, C, H, W] in [0, 1]."""
        self.scheduler.set_timesteps(self.inference_steps)
        timesteps = self.scheduler.timesteps
        start = min(int(round(len(timesteps) * (1 - self.strength))), len(timesteps) - 1)
        x0 = (images * 2 - 1).repeat_interleave(variants, 0)
        out = []
        for chunk in x0.split(batch_size):
            noise = torch.randn(chunk.shape, generator=generator).to(chunk.device)
            x = self.scheduler.add_noise(chunk, noise, timesteps[start:start + 1].to(chunk.device))
            for t in timesteps[start:]:
                x = self.scheduler.step(self.unet(x, t).sample, t, x).prev_sample
            out.append(x.clamp(-1, 1))
        return ((torch.cat(out) + 1) / 2).view(len(images), variants, *images.shape[1:])
