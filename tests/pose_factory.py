"""Tiny random pose models of the real architectures, saved as transformers folders: a VitPose pose
estimator (COCO's 17 keypoints) and an RT-DETR person detector, as the pose annotator loads them.

Random weights find no real people: the factory sets the biases that decide how sure they are, so a test
can ask for a pose model whose every keypoint counts and a detector that sees people everywhere, or none."""
from __future__ import annotations

from pathlib import Path


def save_pose_model(folder: Path, confident: bool = True) -> Path:
    """A VitPose model with a 64 x 48 input; `confident`: every heatmap peaks above the keypoint threshold."""
    import torch
    from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation, VitPoseImageProcessor

    backbone = VitPoseBackboneConfig(image_size=[64, 48], patch_size=[16, 16], hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, mlp_ratio=2, out_indices=[2])
    config = VitPoseConfig(backbone_config=backbone, scale_factor=4, use_simple_decoder=True, num_labels=17)
    torch.manual_seed(0)
    model = VitPoseForPoseEstimation(config)
    if confident:
        with torch.no_grad():
            model.head.conv.bias += 2.0
    model.save_pretrained(folder)
    VitPoseImageProcessor(size={"height": 64, "width": 48}).save_pretrained(folder)
    return folder


def save_person_detector(folder: Path, finds_people: bool = True, person_label: str = "person") -> Path:
    """An RT-DETR detector of two classes (`person_label`, "cat") on 64 x 64 inputs; `finds_people`: every
    query is a person, surely; otherwise nobody is."""
    import torch
    from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrImageProcessor, RTDetrResNetConfig

    backbone = RTDetrResNetConfig(embedding_size=8, hidden_sizes=[8, 8, 16, 16], depths=[1, 1, 1, 1],
                                  layer_type="basic", out_features=["stage2", "stage3", "stage4"])
    config = RTDetrConfig(backbone_config=backbone, encoder_hidden_dim=16, encoder_in_channels=[8, 16, 16],
                          feat_strides=[8, 16, 32], encoder_layers=1, encoder_ffn_dim=16, encoder_attention_heads=2,
                          d_model=16, decoder_in_channels=[16, 16, 16], decoder_ffn_dim=16, decoder_layers=1,
                          decoder_attention_heads=2, num_queries=10, decoder_n_points=2, num_denoising=0,
                          anchor_image_size=None, id2label={0: person_label, 1: "cat"},
                          label2id={person_label: 0, "cat": 1})
    torch.manual_seed(0)
    model = RTDetrForObjectDetection(config)
    person = 8.0 if finds_people else -8.0
    with torch.no_grad():
        for bias in (model.model.enc_score_head.bias, model.model.decoder.class_embed[0].bias):
            bias.copy_(torch.tensor([person, -8.0]))
    model.save_pretrained(folder)
    RTDetrImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder
