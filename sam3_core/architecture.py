"""SAM3's sizes (`Architecture`, presets) and its interactive-segmentation parts, built from
the `sam3` package's own classes.

`FULL` repeats the hyper-parameters of `sam3.model_builder.build_sam3_image_model` (0.1.4):
checkpoints made for it load here unchanged. Smaller presets use the same classes with other
sizes, for tests, smoke runs and benchmarks on random weights.

Interactive segmentation reads only the ViT trunk, the SAM2-style neck and the tracker's
prompt encoder and mask decoder. Concept segmentation adds what `Sam3Image.forward_grounding`
reads: the detector neck, the text encoder (354 M parameters at full size), the geometry
encoder, the detector's transformer, its scoring head and segmentation head
(`sam3_core.concept_architecture`); an interactive-only build never builds them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from sam3_core.sam3_compat import (
    building_on,
    ensure_sam3_importable,
    leave_tracker_autocast,
    quiet_sam3,
)

ensure_sam3_importable()

with quiet_sam3():
    from sam3.model.decoder import (
        TransformerDecoderLayerv2,
        TransformerEncoderCrossAttention,
    )
    from sam3.model.memory import CXBlock, SimpleFuser, SimpleMaskDownSampler, SimpleMaskEncoder
    from sam3.model.model_misc import TransformerWrapper
    from sam3.model.necks import Sam3DualViTDetNeck
    from sam3.model.position_encoding import PositionEmbeddingSine
    from sam3.model.sam1_task_predictor import SAM3InteractiveImagePredictor
    from sam3.model.sam3_tracking_predictor import Sam3TrackerPredictor
    from sam3.model.vitdet import ViT
    from sam3.sam.transformer import RoPEAttention

PATCH_SIZE = 14
# Neck scales as in sam3; the model drops the last (0.5) level ("scalp=1"), so the
# interactive-only neck does not compute it.
DETECTOR_NECK_SCALES = (4.0, 2.0, 1.0, 0.5)
INTERACTIVE_NECK_SCALES = (4.0, 2.0, 1.0)


@dataclass(frozen=True)
class Architecture:
    """Sizes of a SAM3 build. Feature maps are `image_size / 14 * (4, 2, 1)` pixels wide."""

    name: str
    image_size: int
    vit_width: int
    vit_depth: int
    vit_heads: int
    vit_global_blocks: tuple[int, ...]
    vit_window: int
    vit_pretrain_size: int
    feature_width: int
    tracker_ffn_width: int
    tracker_layers: int
    fuser_layers: int
    # Concept segmentation (the detector and its text encoder).
    text_width: int = 1024
    text_heads: int = 16
    text_layers: int = 24
    detector_heads: int = 8
    detector_ffn_width: int = 2048
    detector_encoder_layers: int = 6
    detector_decoder_layers: int = 6
    detector_queries: int = 200
    geometry_layers: int = 3

    def __post_init__(self) -> None:
        grid = self.image_size // PATCH_SIZE
        if self.image_size % PATCH_SIZE or grid % self.vit_window:
            raise ValueError(f"{self.name}: image_size/14 must be a multiple of vit_window")
        if self.vit_global_blocks[-1] != self.vit_depth - 1:
            raise ValueError(f"{self.name}: the last ViT block must use global attention")
        if self.feature_width % 8:
            raise ValueError(f"{self.name}: feature_width must be divisible by 8")

    @property
    def feature_sizes(self) -> tuple[tuple[int, int], ...]:
        """(H, W) of the three decoder feature maps, finest first: 288/144/72 at 1008 px."""
        grid = self.image_size // PATCH_SIZE
        return tuple((grid * k, grid * k) for k in (4, 2, 1))

    @property
    def low_res_size(self) -> int:
        """Side of the low-res logits and of `mask_input` (288 at 1008 px)."""
        return self.feature_sizes[0][0]


FULL = Architecture(
    name="full",
    image_size=1008,
    vit_width=1024,
    vit_depth=32,
    vit_heads=16,
    vit_global_blocks=(7, 15, 23, 31),
    vit_window=24,
    vit_pretrain_size=336,
    feature_width=256,
    tracker_ffn_width=2048,
    tracker_layers=4,
    fuser_layers=2,
)

# 2.2 M parameters: embeds in ~10 ms and decodes in ~4 ms on a laptop CPU.
TINY = Architecture(
    name="tiny",
    image_size=224,
    vit_width=64,
    vit_depth=2,
    vit_heads=2,
    vit_global_blocks=(1,),
    vit_window=8,
    vit_pretrain_size=224,
    feature_width=64,
    tracker_ffn_width=256,
    tracker_layers=1,
    fuser_layers=1,
    text_width=64,
    text_heads=2,
    text_layers=1,
    detector_heads=2,
    detector_ffn_width=128,
    detector_encoder_layers=1,
    detector_decoder_layers=1,
    geometry_layers=1,
)

# SAM3's 1008 px input and feature-map sizes with narrow widths: on one CPU thread it embeds
# in ~0.35 s and decodes in ~0.03 s, about the 10:1 cost ratio of SAM3 on a GPU, so that
# serving benchmarks on random weights weigh embeds and clicks as real traffic would.
NARROW = replace(TINY, name="narrow", image_size=1008, vit_window=24, vit_pretrain_size=336)

ARCHITECTURES = {arch.name: arch for arch in (FULL, TINY, NARROW)}


def _position_encoding(arch: Architecture, width: int) -> PositionEmbeddingSine:
    return PositionEmbeddingSine(
        num_pos_feats=width,
        normalize=True,
        scale=None,
        temperature=10000,
        precompute_resolution=arch.image_size,
    )


def _vit(arch: Architecture) -> ViT:
    return ViT(
        img_size=arch.image_size,
        pretrain_img_size=arch.vit_pretrain_size,
        patch_size=PATCH_SIZE,
        embed_dim=arch.vit_width,
        depth=arch.vit_depth,
        num_heads=arch.vit_heads,
        mlp_ratio=4.625,
        norm_layer="LayerNorm",
        drop_path_rate=0.1,
        qkv_bias=True,
        use_abs_pos=True,
        tile_abs_pos=True,
        global_att_blocks=arch.vit_global_blocks,
        rel_pos_blocks=(),
        use_rope=True,
        use_interp_rope=True,
        window_size=arch.vit_window,
        pretrain_use_cls_token=True,
        retain_cls_token=False,
        ln_pre=True,
        ln_post=False,
        return_interm_layers=False,
        bias_patch_embed=False,
        compile_mode=None,
    )


def build_vision_neck(arch: Architecture, *, with_detector_neck: bool) -> Sam3DualViTDetNeck:
    """The ViT trunk and its FPN neck(s).

    `with_detector_neck=False` (the service): one neck whose `convs` hold the weights of
    sam3's SAM2-style neck (`sam2_convs`), three levels. `True`: sam3's dual neck, exactly as
    `build_sam3_image_model(enable_inst_interactivity=True)` builds it (tests compare both).
    """
    with building_on(torch.device("cpu")):
        return Sam3DualViTDetNeck(
            trunk=_vit(arch),
            position_encoding=_position_encoding(arch, arch.feature_width),
            d_model=arch.feature_width,
            scale_factors=DETECTOR_NECK_SCALES if with_detector_neck else INTERACTIVE_NECK_SCALES,
            add_sam2_neck=with_detector_neck,
        )


def neck_features(
    neck: Sam3DualViTDetNeck, trunk: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """A neck's `convs` and position encodings on the trunk's output, step for step as
    `Sam3DualViTDetNeck.forward` (which would run the trunk first).

    Args:
        trunk: (1, D, g, g), the ViT's last feature map (g = S/14).

    Returns:
        The feature maps, finest first ((1, C', 4g, 4g), ...), and their position encodings.
    """
    features, positions = [], []
    for conv in neck.convs:
        feature = conv(trunk)
        features.append(feature)
        positions.append(neck.position_encoding(feature).to(feature.dtype))
    return features, positions


def _tracker_transformer(arch: Architecture) -> TransformerWrapper:
    grid = arch.image_size // PATCH_SIZE
    width = arch.feature_width
    layer = TransformerDecoderLayerv2(
        cross_attention_first=False,
        activation="relu",
        dim_feedforward=arch.tracker_ffn_width,
        dropout=0.1,
        pos_enc_at_attn=False,
        pre_norm=True,
        self_attention=RoPEAttention(
            embedding_dim=width,
            num_heads=1,
            downsample_rate=1,
            dropout=0.1,
            rope_theta=10000.0,
            feat_sizes=[grid, grid],
            use_fa3=False,
            use_rope_real=False,
        ),
        d_model=width,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        cross_attention=RoPEAttention(
            embedding_dim=width,
            num_heads=1,
            downsample_rate=1,
            dropout=0.1,
            kv_in_dim=64,
            rope_theta=10000.0,
            feat_sizes=[grid, grid],
            rope_k_repeat=True,
            use_fa3=False,
            use_rope_real=False,
        ),
    )
    encoder = TransformerEncoderCrossAttention(
        remove_cross_attention_layers=[],
        batch_first=True,
        d_model=width,
        frozen=False,
        pos_enc_at_input=True,
        layer=layer,
        num_layers=arch.tracker_layers,
        use_act_checkpoint=False,
    )
    return TransformerWrapper(encoder=encoder, decoder=None, d_model=width)


def _tracker_memory_encoder(arch: Architecture) -> SimpleMaskEncoder:
    interpolated = arch.image_size * 8 // 7  # 1152 at 1008 px, as in sam3
    fuser_block = CXBlock(
        dim=arch.feature_width,
        kernel_size=7,
        padding=3,
        layer_scale_init_value=1.0e-06,
        use_dwconv=True,
    )
    return SimpleMaskEncoder(
        out_dim=64,
        position_encoding=_position_encoding(arch, 64),
        mask_downsampler=SimpleMaskDownSampler(
            embed_dim=arch.feature_width,
            kernel_size=3,
            stride=2,
            padding=1,
            interpol_size=[interpolated, interpolated],
        ),
        fuser=SimpleFuser(layer=fuser_block, num_layers=arch.fuser_layers),
        in_dim=arch.feature_width,
    )


def build_tracker(
    arch: Architecture, *, use_memory_selection: bool = False
) -> Sam3TrackerPredictor:
    """sam3's tracker configured as `sam3.model_builder.build_tracker` does, without a backbone.

    `use_memory_selection` is `build_tracker`'s `apply_temporal_disambiguation` (the video
    model turns it on; the interactive predictor does not read memories). The process-wide
    bf16 autocast its constructor enters is left at once (`leave_tracker_autocast`).
    """
    with building_on(torch.device("cpu")):
        tracker = Sam3TrackerPredictor(
            image_size=arch.image_size,
            num_maskmem=7,
            backbone=None,
            backbone_stride=PATCH_SIZE,
            transformer=_tracker_transformer(arch),
            maskmem_backbone=_tracker_memory_encoder(arch),
            multimask_output_in_sam=True,
            forward_backbone_per_frame_for_eval=True,
            trim_past_non_cond_mem_for_eval=False,
            multimask_output_for_tracking=True,
            multimask_min_pt_num=0,
            multimask_max_pt_num=1,
            always_start_from_first_ann_frame=False,
            non_overlap_masks_for_mem_enc=False,
            non_overlap_masks_for_output=False,
            max_cond_frames_in_attn=4,
            offload_output_to_cpu_for_eval=False,
            sam_mask_decoder_extra_args={
                "dynamic_multimask_via_stability": True,
                "dynamic_multimask_stability_delta": 0.05,
                "dynamic_multimask_stability_thresh": 0.98,
            },
            clear_non_cond_mem_around_input=True,
            fill_hole_area=0,
            use_memory_selection=use_memory_selection,
        )
        leave_tracker_autocast(tracker)
    return tracker


def build_interactive_predictor(
    arch: Architecture, *, max_hole_area: float = 256.0
) -> SAM3InteractiveImagePredictor:
    """sam3's interactive predictor around a tracker configured as `build_tracker` does.

    `max_hole_area` is sam3's default (256 px of the low-res mask); 0 turns hole filling off,
    which tests on random weights do (noisy masks make scikit-image's labelling slow).
    """
    tracker = build_tracker(arch)
    with building_on(torch.device("cpu")):
        predictor = SAM3InteractiveImagePredictor(tracker, max_hole_area=max_hole_area)
    # sam3 hard-codes the 1008 px feature sizes here.
    predictor._bb_feat_sizes = list(arch.feature_sizes)
    return predictor


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
