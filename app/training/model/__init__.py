"""Train a latent diffusion model of one's own, the way Stable Diffusion was made: a KL autoencoder
(Latent Diffusion's loss: L1, perceptual, KL and a PatchGAN), then a 9-channel inpainting UNet on its
latents, conditioned on a frozen CLIP text encoder's captions or on classes (the sub-folders). The result is
a diffusers folder the editor loads like any model. `train.train_model` runs it; `cli` is `train-model`.
"""
