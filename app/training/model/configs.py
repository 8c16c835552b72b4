"""The sizes a model of one's own comes in, and the diffusers modules each one builds.

tiny trains on a CPU in a few minutes (a toy that shows the whole process works); small and base are for
GPUs: small at 256 px with about a third of Stable Diffusion 1.5's widths, base at 512 px with SD 1.5's own
UNet and VAE (the base UNet has 860 M parameters, like SD 1.5's).
"""
from __future__ import annotations

from dataclasses import dataclass

LATENT_CHANNELS = 4
NUM_TRAIN_TIMESTEPS = 1000
SCHEDULER_CONFIG = {          # Stable Diffusion's DDPM schedule (scaled_linear betas, epsilon prediction)
    "_class_name": "DDPMScheduler", "num_train_timesteps": NUM_TRAIN_TIMESTEPS, "beta_start": 0.00085,
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "clip_sample": False,
    "timestep_spacing": "leading", "steps_offset": 1, "variance_type": "fixed_small",
}


@dataclass(frozen=True)
class ModelConfig:
    name: str
    what: str
    resolution: int
    vae_channels: tuple[int, ...]       # one per VAE level: len - 1 halvings (3 levels: 4x, 4 levels: 8x)
    vae_layers: int
    unet_channels: tuple[int, ...]
    unet_layers: int
    attention: tuple[bool, ...]         # per UNet level: attention there (cross-attention for text models)
    heads: int
    disc_channels: int                  # the PatchGAN discriminator's first width, and its depth
    disc_layers: int
    steps_autoencoder: int
    steps_diffusion: int
    batch: int
    autoencoder_lr: float
    diffusion_lr: float
    gan_start: int                      # autoencoder steps before the adversarial term joins in
    warmup: int                         # diffusion steps of linear learning-rate warm-up
    sample_every: int
    checkpoint_every: int
    checkpointing: bool                 # gradient checkpointing from the start (GPUs only)

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def multiple(self) -> int:
        """What the image side must be a multiple of: the VAE's factor times the UNet's halvings."""
        return self.vae_factor * 2 ** (len(self.unet_channels) - 1)


CONFIGS = {
    "tiny": ModelConfig(
        "tiny", "64 px, VAE and UNet of about 1 M parameters each: a toy that trains on a CPU in minutes",
        resolution=64, vae_channels=(32, 64, 64), vae_layers=1, unet_channels=(32, 64), unet_layers=1,
        attention=(False, True), heads=4, disc_channels=32, disc_layers=2, steps_autoencoder=400,
        steps_diffusion=600, batch=4, autoencoder_lr=5e-4, diffusion_lr=1e-3, gan_start=200, warmup=20,
        sample_every=100, checkpoint_every=100, checkpointing=False),
    "small": ModelConfig(
        "small", "256 px, a third of SD 1.5's widths (VAE 21 M, UNet 100 M parameters): one GPU, about a day",
        resolution=256, vae_channels=(64, 128, 256, 256), vae_layers=2, unet_channels=(128, 256, 512),
        unet_layers=2, attention=(False, True, True), heads=8, disc_channels=64, disc_layers=3,
        steps_autoencoder=20_000, steps_diffusion=100_000, batch=16, autoencoder_lr=1e-4, diffusion_lr=1e-4,
        gan_start=5_000, warmup=1_000, sample_every=1_000, checkpoint_every=1_000, checkpointing=False),
    "base": ModelConfig(
        "base", "512 px, SD 1.5's VAE (84 M) and UNet (860 M parameters): large GPUs, days to weeks",
        resolution=512, vae_channels=(128, 256, 512, 512), vae_layers=2, unet_channels=(320, 640, 1280, 1280),
        unet_layers=2, attention=(True, True, True, False), heads=8, disc_channels=64, disc_layers=3,
        steps_autoencoder=50_000, steps_diffusion=200_000, batch=8, autoencoder_lr=5e-5, diffusion_lr=1e-4,
        gan_start=10_000, warmup=10_000, sample_every=2_000, checkpoint_every=2_000, checkpointing=True),
}


def build_vae(config: ModelConfig, resolution: int):
    from diffusers import AutoencoderKL

    levels = len(config.vae_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
                         up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=config.vae_channels,
                         layers_per_block=config.vae_layers, latent_channels=LATENT_CHANNELS, norm_num_groups=32,
                         sample_size=resolution, scaling_factor=1.0)


def build_unet(config: ModelConfig, resolution: int, cross_attention_dim: int | None, classes: int | None):
    """The 9-channel inpainting UNet: text models attend to the text encoder's tokens; class models
    (`classes` labels, plus one unconditional class) get the class embedding added to the time embedding
    and self-attention instead of cross-attention."""
    from diffusers import UNet2DConditionModel

    text = cross_attention_dim is not None
    down = tuple(("CrossAttnDownBlock2D" if text else "AttnDownBlock2D") if attend else "DownBlock2D"
                 for attend in config.attention)
    up = tuple(("CrossAttnUpBlock2D" if text else "AttnUpBlock2D") if attend else "UpBlock2D"
               for attend in reversed(config.attention))
    # attention_head_dim is the number of heads for cross-attention blocks (diffusers' legacy naming) and
    # the width of a head for self-attention ones.
    options = dict(cross_attention_dim=cross_attention_dim, mid_block_type="UNetMidBlock2DCrossAttn",
                   attention_head_dim=config.heads) if text else \
        dict(num_class_embeds=classes + 1, mid_block_type="UNetMidBlock2D",
             attention_head_dim=tuple(width // config.heads for width in config.unet_channels))
    return UNet2DConditionModel(sample_size=resolution // config.vae_factor, in_channels=2 * LATENT_CHANNELS + 1,
                                out_channels=LATENT_CHANNELS, layers_per_block=config.unet_layers,
                                block_out_channels=config.unet_channels, down_block_types=down, up_block_types=up,
                                norm_num_groups=32, **options)
