"""Training, run in its own process so the editor never stalls (app/training/process.py):

* style_lora: learn a style from a few images (DreamBooth LoRA on a Stable Diffusion model, with peft);
* model: train a latent diffusion model of one's own (a KL autoencoder, then a 9-channel inpainting UNet).

Shared by both: dataset (reading and cropping the images), checkpoints (atomic saves, resume) and progress
(the events a run reports and the pause / resume / cancel commands it obeys). Qt-free.
"""
