"""SAM3's concept-segmentation parts, built from the `sam3` package's own classes with
`build_sam3_image_model`'s hyper-parameters (`FULL`) or the smaller presets' sizes: the
detector neck, the text encoder, and the detector (transformer, geometry encoder,
segmentation head, scoring) that `Sam3Processor.set_text_prompt` drives."""

from __future__ import annotations

import torch
from torch import nn

from sam3_core.architecture import (
    INTERACTIVE_NECK_SCALES,
    PATCH_SIZE,
    Architecture,
    _position_encoding,
)
from sam3_core.sam3_compat import building_on, quiet_sam3

with quiet_sam3():
    from sam3.model.decoder import TransformerDecoder, TransformerDecoderLayer
    from sam3.model.encoder import TransformerEncoderFusion, TransformerEncoderLayer
    from sam3.model.geometry_encoders import SequenceGeometryEncoder
    from sam3.model.maskformer_segmentation import PixelDecoder, UniversalSegmentationHead
    from sam3.model.model_misc import MLP, DotProductScoring, TransformerWrapper
    from sam3.model.model_misc import MultiheadAttentionWrapper as MultiheadAttention
    from sam3.model.necks import Sam3DualViTDetNeck
    from sam3.model.position_encoding import PositionEmbeddingSine
    from sam3.model.sam3_image import Sam3Image
    from sam3.model.text_encoder_ve import VETextEncoder
    from sam3.model.tokenizer_ve import SimpleTokenizer
    from sam3.model.vl_combiner import SAM3VLBackbone


class _TrunkWidth(nn.Module):
    """Stands in for the ViT where a neck is built apart from it: sam3's neck reads only
    the trunk's `channel_list`."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.channel_list = [width]


def build_detector_neck(arch: Architecture) -> Sam3DualViTDetNeck:
    """sam3's detector neck (`convs`, levels 4x/2x/1x) without a trunk of its own: it runs
    on the trunk output the image's embedding keeps. Its `trunk` is a parameter-free stand-in."""
    with building_on(torch.device("cpu")):
        return Sam3DualViTDetNeck(
            trunk=_TrunkWidth(arch.vit_width),
            position_encoding=_position_encoding(arch, arch.feature_width),
            d_model=arch.feature_width,
            scale_factors=INTERACTIVE_NECK_SCALES,
            add_sam2_neck=False,
        )


def build_text_encoder(arch: Architecture, bpe_path: str) -> VETextEncoder:
    """sam3's text encoder (CLIP-style, 32 tokens) and its tokenizer."""
    encoder = VETextEncoder(
        tokenizer=SimpleTokenizer(bpe_path=bpe_path),
        d_model=arch.feature_width,
        width=arch.text_width,
        heads=arch.text_heads,
        layers=arch.text_layers,
    )
    initialise_text_encoder(encoder)
    return encoder


def initialise_text_encoder(encoder: VETextEncoder) -> None:
    """sam3 allocates the text transformer's `positional_embedding` and `text_projection`
    with `torch.empty` and leaves them to the checkpoint: random-weight builds would read
    whatever memory held (NaN, often, and never the same twice). Draw them as CLIP
    initialises them; a checkpoint overwrites both."""
    text = encoder.encoder
    nn.init.normal_(text.positional_embedding, std=0.01)
    if isinstance(text.text_projection, nn.Parameter):
        nn.init.normal_(text.text_projection, std=text.width**-0.5)


def _attention(
    arch: Architecture, *, batch_first: bool | None = None, dropout: float = 0.1
) -> MultiheadAttention:
    kwargs = {} if batch_first is None else {"batch_first": batch_first}
    return MultiheadAttention(
        num_heads=arch.detector_heads, dropout=dropout, embed_dim=arch.feature_width, **kwargs
    )


def _detector_transformer(arch: Architecture) -> TransformerWrapper:
    width = arch.feature_width
    encoder = TransformerEncoderFusion(
        layer=TransformerEncoderLayer(
            activation="relu",
            d_model=width,
            dim_feedforward=arch.detector_ffn_width,
            dropout=0.1,
            pos_enc_at_attn=True,
            pos_enc_at_cross_attn_keys=False,
            pos_enc_at_cross_attn_queries=False,
            pre_norm=True,
            self_attention=_attention(arch, batch_first=True),
            cross_attention=_attention(arch, batch_first=True),
        ),
        num_layers=arch.detector_encoder_layers,
        d_model=width,
        num_feature_levels=1,
        frozen=False,
        use_act_checkpoint=True,
        add_pooled_text_to_img_feat=False,
        pool_text_with_mask=True,
    )
    decoder = TransformerDecoder(
        layer=TransformerDecoderLayer(
            activation="relu",
            d_model=width,
            dim_feedforward=arch.detector_ffn_width,
            dropout=0.1,
            cross_attention=_attention(arch),
            n_heads=arch.detector_heads,
            use_text_cross_attention=True,
        ),
        num_layers=arch.detector_decoder_layers,
        num_queries=arch.detector_queries,
        return_intermediate=True,
        box_refine=True,
        num_o2m_queries=0,
        dac=True,
        boxRPB="log",
        d_model=width,
        frozen=False,
        interaction_layer=None,
        dac_use_selfatt_ln=True,
        resolution=arch.image_size,
        stride=PATCH_SIZE,
        use_act_checkpoint=True,
        presence_token=True,
    )
    return TransformerWrapper(encoder=encoder, decoder=decoder, d_model=width)


def _geometry_encoder(arch: Architecture) -> SequenceGeometryEncoder:
    width = arch.feature_width
    return SequenceGeometryEncoder(
        pos_enc=PositionEmbeddingSine(
            num_pos_feats=width, normalize=True, scale=None, temperature=10000
        ),
        encode_boxes_as_points=False,
        points_direct_project=True,
        points_pool=True,
        points_pos_enc=True,
        boxes_direct_project=True,
        boxes_pool=True,
        boxes_pos_enc=True,
        d_model=width,
        num_layers=arch.geometry_layers,
        layer=TransformerEncoderLayer(
            activation="relu",
            d_model=width,
            dim_feedforward=arch.detector_ffn_width,
            dropout=0.1,
            pos_enc_at_attn=False,
            pre_norm=True,
            self_attention=_attention(arch, batch_first=False),
            pos_enc_at_cross_attn_queries=False,
            pos_enc_at_cross_attn_keys=True,
            cross_attention=_attention(arch, batch_first=False),
        ),
        use_act_ckpt=True,
        add_cls=True,
        add_post_encode_proj=True,
    )


def _segmentation_head(arch: Architecture) -> UniversalSegmentationHead:
    width = arch.feature_width
    return UniversalSegmentationHead(
        hidden_dim=width,
        upsampling_stages=3,
        aux_masks=False,
        presence_head=False,
        dot_product_scorer=None,
        act_ckpt=True,
        cross_attend_prompt=_attention(arch, dropout=0.0),
        pixel_decoder=PixelDecoder(
            num_upsampling_stages=3, interpolation_mode="nearest", hidden_dim=width
        ),
    )


def _dot_product_scoring(arch: Architecture) -> DotProductScoring:
    width = arch.feature_width
    prompt_mlp = MLP(
        input_dim=width,
        hidden_dim=arch.detector_ffn_width,
        output_dim=width,
        num_layers=2,
        dropout=0.1,
        residual=True,
        out_norm=nn.LayerNorm(width),
    )
    return DotProductScoring(d_model=width, d_proj=width, prompt_mlp=prompt_mlp)


def build_concept_detector(
    arch: Architecture, bpe_path: str, *, vision: Sam3DualViTDetNeck | None = None
) -> Sam3Image:
    """sam3's image detector (`Sam3Image`) as `build_sam3_image_model` configures it: text
    encoder, geometry encoder, transformer, scoring and segmentation heads.

    `vision=None` (the service): the detector has no vision backbone of its own; callers pass
    it the detector neck's features, computed from the trunk output the embedding keeps.
    Tests pass sam3's dual neck to get sam3's own complete model.
    """
    with building_on(torch.device("cpu")):
        return Sam3Image(
            backbone=SAM3VLBackbone(
                visual=vision, text=build_text_encoder(arch, bpe_path), scalp=1
            ),
            transformer=_detector_transformer(arch),
            input_geometry_encoder=_geometry_encoder(arch),
            segmentation_head=_segmentation_head(arch),
            num_feature_levels=1,
            o2m_mask_predict=True,
            dot_prod_scoring=_dot_product_scoring(arch),
            use_instance_query=False,
            multimask_output=True,
            inst_interactive_predictor=None,
            matcher=None,
        )
