"""Convert a checkpoint trained with the RSRefSeg 2 authors' code.

The official RSRefSeg 2 (https://github.com/KyanChen/RSRefSeg2,
``refseg/models/models.py`` with ``configs_RSRefSeg2/*_training.py``) builds
``RefSegEncoderDecoder`` from SAM 2.1 (``RefSegSam``: sam2's ``SAM2Base``
with only ``image_encoder``, ``sam_prompt_encoder``, ``sam_mask_decoder``
and ``no_mem_embed`` kept), the vision and text models of transformers'
``SiglipModel`` (SigLIP 2 so400m-patch16-512), their ``CascadedPrompter``
and ``PseudoSegHead``; PEFT LoRA wraps the SAM 2 image encoder and both
SigLIP towers. DeepSpeed saves it (``<ckpt>.pth/mp_rank_00_model_states.pt``
with the weights under ``module``), or a plain state dict::

    theirs                                          rsrefseg-mm
    backbone.model.image_encoder.base_model.model.* decode_head.image_encoder.*
    backbone.model.sam_prompt_encoder.*             decode_head.prompt_encoder.*
    backbone.model.sam_mask_decoder.*               decode_head.mask_decoder.*
    backbone.model.no_mem_embed                     decode_head.no_mem_embed
    clip_vision_encoder.base_model.model.model.*    backbone.vision_model.*
    clip_text_encoder.base_model.model.model.*      backbone.text_model.*
    clip_text_encoder.base_model.model.logit_*      backbone.logit_*
    prompter.*                                      neck.*
    decode_head.logit_scale2 / logit_bias2          neck.region_text_logit_*

SAM 2's names go through the head's own reading of official SAM 2 files
(:func:`rsrefseg_mm.models.sam2.convert_sam2_state_dict`; video-only
tensors, absent from their files, would be dropped and reported);
transformers' SigLIP names are :class:`SigLIPBackbone`'s (as it reads
Hugging Face SigLIP 2 folders); the prompter's through
:func:`rsrefseg_mm.models.necks.cascaded_prompter.authors_prompter_key_map`.
LoRA stays LoRA: PEFT's ``base_layer`` / ``lora_A.default`` /
``lora_B.default`` become ``original_layer`` / ``lora_down`` / ``lora_up``
(same shapes, same update ``alpha / r * B A``). The rank of each tower is
read from the tensors; the alpha is not stored and is ``--lora-alpha`` (16
in the authors' configs). Every input tensor is mapped except these, which
are reported: the LoRA pair PEFT puts on SigLIP's vision pooling head
``head.attention.out_proj`` (its ``nn.MultiheadAttention`` reads the base
weight, so the pair never acts; the base weight is kept) and
``PseudoSegHead``'s ``logit_scale1`` / ``logit_bias1`` (the per-image
region loss, off in their configs). Floating tensors are saved in fp32.

The authors' SigLIP 2 image LoRA targets include the pooling head's
``head.mlp.fc1`` / ``fc2``, their text LoRA the text ``head``: the config
given to ``--config`` must wrap the same layers (the tool names the
tensors that do not fit). Their tokenizer call (``padding=True``,
attention mask, sentence feature at the last position) differs from
``SigLIPBackbone``'s default (64 positions, no mask): their weights
predict as their code does with ``text_padding='none'`` (each expression at
its own length, as theirs with one expression per batch; docs/rsrefseg2.md).

With ``--config`` the tool builds that config's model, loads the result
strictly (every tensor, same shapes, LoRA scaling ``alpha / r`` equal) and
writes ``<OUT stem>.py``, a config inheriting it with
``text_padding='none'``, for ``tools/test.py``::

    python tools/model_converters/rsrefseg2_official2mm.py \\
        work_dirs/rrsisd/epoch_300.pth checkpoints/rsrefseg2-l_official.pth \\
        --config configs/rsrefseg2/rsrefseg2-l_siglip2-so400m-p16-512-sam2.1-hiera-l_8xb8-lora-300e_rrsisd-1024x1024.py
    python tools/test.py checkpoints/rsrefseg2-l_official.py \\
        checkpoints/rsrefseg2-l_official.pth
"""  # noqa: E501
import argparse
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch

from rsrefseg_mm.models.necks.cascaded_prompter import authors_prompter_key_map
from rsrefseg_mm.models.sam2 import convert_sam2_state_dict
from rsrefseg_mm.utils import allow_unsafe_load
from rsrefseg_mm.utils import official_checkpoint as official

#: tools/test.py options for their weights: each expression at its own
#: length through the text tower, as their code with one per batch.
TEST_OPTIONS = '--cfg-options model.backbone.text_padding=none'
#: Top-level modules of the authors' ``RefSegEncoderDecoder``.
GROUPS = ('backbone', 'clip_vision_encoder', 'clip_text_encoder', 'prompter',
          'decode_head')
#: ``SAM2Base`` parts that ``RefSegSam`` keeps.
SAM2_PARTS = ('image_encoder.', 'prompt_encoder.', 'mask_decoder.',
              'no_mem_embed')
#: LoRA that PEFT attaches but nn.MultiheadAttention never applies.
IDLE_LORA = re.compile(r'^head\.attention\.out_proj\.lora_[AB]\.')
TOWERS = {
    'SAM 2 image encoder': 'decode_head.image_encoder.',
    'SigLIP image tower': 'backbone.vision_model.',
    'SigLIP text tower': 'backbone.text_model.',
}
#: Why an authors' tensor is not in the output.
UNUSED_HEAD = ('PseudoSegHead scale / bias of the per-image region loss, '
               'off in the authors\' configs; the plugin has no such term')
IDLE_REASON = ('LoRA of the vision pooling head out_proj, never applied '
               '(nn.MultiheadAttention reads the base weight)')


def split_groups(state: Dict[str, torch.Tensor],
                 path: str) -> Dict[str, Dict[str, torch.Tensor]]:
    """Group keys by the authors' top-level module.

    Raises:
        ValueError: A checkpoint of another layout, a missing module, keys
            of no module, or PEFT tensors other than LoRA ``default``.
    """
    if any(
            k.startswith(('decode_head.image_encoder.', 'neck.'))
            for k in state):
        raise ValueError(
            f'{path} is already in rsrefseg-mm\'s layout (decode_head.*, '
            'neck.*): pass it to tools/test.py directly')
    if any(k.startswith('prompter_down_') for k in state):
        raise ValueError(f'{path} is a checkpoint of the first RSRefSeg (its '
                         'prompter_down_* modules): use '
                         'tools/model_converters/rsrefseg_official2mm.py')
    groups: Dict[str, Dict[str, torch.Tensor]] = {g: {} for g in GROUPS}
    unknown = []
    for k, v in state.items():
        group, _, rest = k.partition('.')
        if group in groups:
            groups[group][rest] = v
        else:
            unknown.append(k)
    absent = [g for g in GROUPS if not groups[g]]
    if len(absent) == len(GROUPS):
        raise ValueError(
            f'{path} is not a checkpoint of the authors\' RSRefSeg 2 '
            f'(KyanChen/RSRefSeg2 RefSegEncoderDecoder): none of the modules '
            f'{list(GROUPS)}; its first keys are {list(state)[:5]}')
    if absent or unknown:
        raise ValueError(
            f'{path} does not have the authors\' RSRefSeg 2 layout: modules '
            f'without tensors {absent}, keys of no module {unknown[:5]}')
    official.check_peft_adapters(state, path)
    return groups


def convert(
    state: Dict[str, torch.Tensor],
    path: str = '<state dict>'
) -> Tuple['OrderedDict[str, torch.Tensor]', dict]:
    """Convert the authors' state dict (see the module docstring).

    Returns:
        tuple[OrderedDict, dict]: rsrefseg-mm's state dict (fp32 floats)
        and a report: ``sources`` (output key -> input key), ``dropped``
        (input key -> reason) and ``ranks`` (tower -> LoRA rank or None).

    Raises:
        ValueError: See :func:`split_groups`; also tensors of no known
            module of SAM 2, SigLIP, the prompter or the head, or LoRA
            ranks that differ within a tower.
    """
    groups = split_groups(state, path)
    out, sources, dropped = OrderedDict(), {}, {}

    def put(key: str, value: torch.Tensor, source: str) -> None:
        key = official.depeft(key)
        if key in out:
            raise ValueError(f'{path}: {source} and {sources[key]} both '
                             f'map to {key}')
        out[key] = value.float() if value.is_floating_point() else value
        sources[key] = source

    # SAM 2 (RefSegSam.model): SAM2Base names, the image encoder in PEFT
    sam, sam_src = OrderedDict(), {}
    for rest, v in groups['backbone'].items():
        src = 'backbone.' + rest
        if not rest.startswith('model.'):
            raise ValueError(f'{path}: {src} is not under backbone.model')
        name = rest[len('model.'):]
        if name.startswith('image_encoder.'):
            name = 'image_encoder.' + official.strip_peft_prefix(
                name[len('image_encoder.'):])
        sam[name], sam_src[name] = v, src
    renamed, skipped = convert_sam2_state_dict(sam)
    kept = [k for k in sam if k not in set(skipped)]
    for name in skipped:
        dropped[sam_src[name]] = 'SAM 2 video-model tensor (unused on images)'
    for name, new in zip(kept, renamed):
        if not new.startswith(SAM2_PARTS):
            raise ValueError(f'{path}: SAM 2 tensor {sam_src[name]} of no '
                             f'image-model module {list(SAM2_PARTS)}')
        put('decode_head.' + new, renamed[new], sam_src[name])

    # SigLIP 2 towers: transformers' SiglipModel names are SigLIPBackbone's
    for group, tower in (('clip_vision_encoder', 'vision_model.'),
                         ('clip_text_encoder', 'text_model.')):
        for rest, v in groups[group].items():
            src = f'{group}.{rest}'
            name = official.strip_peft_prefix(rest)
            if name.startswith('model.'):
                inner = name[len('model.'):]
                if group == 'clip_vision_encoder' and IDLE_LORA.match(inner):
                    dropped[src] = IDLE_REASON
                    continue
                if group == 'clip_vision_encoder':
                    inner = inner.replace(
                        'head.attention.out_proj.base_layer.',
                        'head.attention.out_proj.')
                put('backbone.' + tower + inner, v, src)
            elif group == 'clip_text_encoder' and name in ('logit_scale',
                                                           'logit_bias'):
                put('backbone.' + name, v, src)
            else:
                raise ValueError(
                    f'{path}: unknown SigLIP tensor {src} (a text '
                    '`projector` (projector_cfg) is not supported)')

    # the prompter and the head's learnt loss scale / bias
    theirs = {f'prompter.{k}': v for k, v in groups['prompter'].items()}
    theirs.update(
        {f'decode_head.{k}': v
         for k, v in groups['decode_head'].items()})
    try:
        key_map = authors_prompter_key_map(theirs)
    except ValueError as e:
        raise ValueError(f'{path}: {e}') from None
    for old, new in key_map.items():
        if new is None:
            dropped[old] = UNUSED_HEAD
        else:
            put(new, theirs[old], old)

    ranks = {}
    for tower, prefix in TOWERS.items():
        try:
            ranks[tower] = official.lora_rank(out, prefix, tower)
        except ValueError as e:
            raise ValueError(f'{path}: {e}') from None
    return out, dict(sources=sources, dropped=dropped, ranks=ranks)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    return official.converter_parser(
        'Convert a checkpoint trained with the RSRefSeg 2 authors\' code '
        '(KyanChen/RSRefSeg2) to rsrefseg-mm.',
        'rsrefseg-mm config to check the result against (strict load into '
        'its model, LoRA scaling alpha / r) and to inherit in <dst stem>.py '
        'with text_padding=\'none\'').parse_args(argv)


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    with allow_unsafe_load(args.unsafe_load):
        state = official.read_official_state_dict(args.src)
    out, report = convert(state, args.src)
    if set(report['sources'].values()) | set(report['dropped']) != set(state):
        raise RuntimeError('conversion lost track of tensors')
    if args.config:
        official.check_with_config(
            out,
            args.config,
            args.lora_alpha,
            hint='LoRA rank / targets, arch or prompter sizes of the config')
    official.save_converted(
        out,
        args.src,
        args.dst,
        converter='rsrefseg2_official2mm',
        lora_ranks=report['ranks'],
        lora_alpha=args.lora_alpha)
    print(f'{args.src}: {len(state)} tensors -> {args.dst}: {len(out)} '
          f'tensors ({len(report["sources"])} mapped, '
          f'{len(report["dropped"])} dropped)')
    for k, why in report['dropped'].items():
        print(f'  dropped {k}: {why}')
    print(f'  LoRA ranks {report["ranks"]}, alpha {args.lora_alpha:g}')
    if args.config:
        cfg_out = official.write_test_config(
            args.dst, args.src, args.config,
            'each expression through the text tower at its own length, as '
            'their code with one expression per batch',
            "dict(backbone=dict(text_padding='none'))")
        print(f'  checked against {args.config} (strict); test with:\n'
              f'  python tools/test.py {cfg_out} {args.dst}')
    else:
        print(f'  test with: python tools/test.py CONFIG {args.dst} '
              f'{TEST_OPTIONS}')
    return report


if __name__ == '__main__':
    main()
