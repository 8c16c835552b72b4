"""The Stable Diffusion backend on diffusers: model files and loading, devices, text encoding, samplers, the
denoising loop, the latent codec, LoRA, ControlNet and the engine that runs a request with them."""
