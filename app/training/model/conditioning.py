"""What the UNet is conditioned on: a frozen CLIP text encoder's tokens (the captions), or a class.

Both drop the condition for about one step in ten (an empty caption, or the unconditional class), so that
the model also learns the unconditional prediction classifier-free guidance needs.

The text encoder and tokenizer come from a diffusers folder the user has, checked and read by the editor's
own loader functions (config bounds, weights through the bounded safetensors reader or weights-only
torch.load), and captions are encoded by the editor's own prompt encoder: the exported model is then fed
exactly what it was trained on.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from app.training.model.data import ModelData
from app.training.runs import TrainingError

DROPOUT = 0.1


class TextConditioner:
    kind = "text"

    def __init__(self, folder: str, device: torch.device) -> None:
        from transformers import CLIPTextModel

        from app.engine.diffusion.config_folder import part_config
        from app.engine.diffusion.model_files import check_folder_weights
        from app.engine.diffusion.model_loader import _quiet_libraries, tokenizers_for

        path = Path(folder).expanduser()
        for part in ("text_encoder", "tokenizer"):
            if not (path / part).is_dir():
                raise TrainingError(f"--text-encoder {folder}: it has no {part}/ folder (give a diffusers model "
                                    "folder, such as a Stable Diffusion 1.5 one)")
        path = path.resolve()
        config = part_config(path / "text_encoder" / "config.json", "text_encoder",
                             f"{path.name}/text_encoder/config.json")
        safe = check_folder_weights(path, "text_encoder")
        self.dim = int(config.get("hidden_size", 768))
        self.family = "sd2" if self.dim == 1024 else "sd1"     # as the editor tells the exported model's family
        _quiet_libraries()
        self.tokenizer = tokenizers_for(path, self.family, f"{path.name}/")[0]
        self.encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", use_safetensors=safe,
                                                     local_files_only=True).to(device).eval().requires_grad_(False)
        self.device = device
        self.source = str(path)

    @property
    def cross_attention_dim(self) -> int:
        return self.dim

    @property
    def classes(self) -> None:
        return None

    @torch.no_grad()
    def encode(self, captions: list[str]) -> torch.Tensor:
        from app.engine.diffusion.text_encoding import encode_prompts

        model = SimpleNamespace(tokenizers=[self.tokenizer], text_encoders=[self.encoder], is_xl=False,
                                unet=SimpleNamespace(dtype=torch.float32), extra={})
        return torch.cat([c.embeddings for c in encode_prompts(model, captions, self.device)])

    def training(self, data: ModelData, indices: torch.Tensor, generator: torch.Generator) -> dict:
        dropped = torch.rand(len(indices), generator=generator) < DROPOUT
        captions = ["" if drop else data.captions[i] for i, drop in zip(indices.tolist(), dropped.tolist())]
        return {"encoder_hidden_states": self.encode(captions)}

    def guided(self, data: ModelData, index: int) -> tuple[dict, dict, str]:
        """(conditional, unconditional) UNet inputs for image `index`'s caption, and the caption."""
        both = self.encode([data.captions[index], ""])
        return {"encoder_hidden_states": both[:1]}, {"encoder_hidden_states": both[1:]}, data.captions[index]


class ClassConditioner:
    kind = "class"

    def __init__(self, labels: list[str], device: torch.device) -> None:
        self.labels = labels
        self.unconditional = len(labels)
        self.device = device

    @property
    def cross_attention_dim(self) -> None:
        return None

    @property
    def classes(self) -> int:
        return len(self.labels)

    def training(self, data: ModelData, indices: torch.Tensor, generator: torch.Generator) -> dict:
        dropped = torch.rand(len(indices), generator=generator) < DROPOUT
        classes = torch.where(dropped, torch.full_like(indices, self.unconditional), data.classes[indices])
        return {"encoder_hidden_states": None, "class_labels": classes.to(self.device)}

    def guided(self, data: ModelData, index: int) -> tuple[dict, dict, str]:
        label = int(data.classes[index])
        return ({"encoder_hidden_states": None, "class_labels": torch.tensor([label], device=self.device)},
                {"encoder_hidden_states": None,
                 "class_labels": torch.tensor([self.unconditional], device=self.device)}, self.labels[label])
