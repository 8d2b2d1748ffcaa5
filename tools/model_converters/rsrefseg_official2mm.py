"""Convert a checkpoint trained with the RSRefSeg authors' code.

The official RSRefSeg (https://github.com/KyanChen/RSRefSeg,
``rsris/models/models.py`` with ``configs_RSRefSeg/RSRefSeg-{b,l}.py``)
builds its model from transformers' ``SamModel`` and ``SiglipModel``, wraps
the SAM image encoder and both SigLIP towers in PEFT LoRA and saves
(DeepSpeed's ``<ckpt>.pth/mp_rank_00_model_states.pt`` with the weights
under ``module``, or the plain state dict their
``deepspeed_ckpt_to_torch_ckpt.py`` writes)::

    theirs                                          rsrefseg-mm
    backbone.base_model.model.model.*               decode_head.image_encoder.*
    backbone.base_model.model.shared_image_embedding.positional_embedding
                                                    decode_head.prompt_encoder.pe_layer.*
    sam_prompt_encoder.model.*                      decode_head.prompt_encoder.*
    sam_mask_decoder.model.*                        decode_head.mask_decoder.*
    clip_vision_encoder.base_model.model.model.*    backbone.vision_model.*
    clip_text_encoder.base_model.model.model.*      backbone.text_model.*
    clip_text_encoder.base_model.model.logit_*      backbone.logit_*
    prompter_down_channel.*                         neck.fuse.*
    prompter_down_spatial.{i < k}.*                 neck.downsample.{i}.*
    prompter_down_spatial.{k}.conv.*                neck.final_proj.*

SAM's transformers names are converted as for Hugging Face SAM folders
(:func:`rsrefseg_mm.models.sam.convert_hf_sam_state_dict`). LoRA stays LoRA:
PEFT's ``base_layer`` / ``lora_A.default`` / ``lora_B.default`` become
``original_layer`` / ``lora_down`` / ``lora_up`` (same shapes, same update
``alpha / r * B A``), so the checkpoint loads into the paper configs and can
be trained further. The rank of each tower is read from the tensors; the
alpha is not stored and is ``--lora-alpha`` (16 in the authors' configs).
Every input tensor is mapped except three, which are reported: the prompt
encoder's copy of the shared positional encoding (the authors' forward
reads the image encoder's copy), and the LoRA pair PEFT puts on SigLIP's
vision pooling head ``head.attention.out_proj`` (its ``nn.MultiheadAttention``
reads ``out_proj.weight``, the base weight, so the pair never acts; the
base weight is kept). One tensor is added: ``neck.logit_bias`` = 0 (their
filter bias is SigLIP's ``logit_bias`` alone). Floating tensors are saved in
fp32.

transformers' SAM mask decoder uses LayerNorm eps 1e-6: test the result with
``model.decode_head.decoder_norm_eps=1e-6``. With ``--config`` the tool
builds that config's model, loads the result strictly (every tensor, same
shapes, LoRA scaling ``alpha / r`` equal), and writes ``<OUT stem>.py``, a
config inheriting it with that eps, for ``tools/test.py``::

    python tools/model_converters/rsrefseg_official2mm.py \\
        work_dirs/RSRefSeg-b/epoch_85.pth checkpoints/rsrefseg-b_official.pth \\
        --config configs/rsrefseg/rsrefseg-b_siglip-so400m-p14-384-sam-vit-b_8xb4-lora-200e_rrsisd-1024x1024.py
    python tools/test.py checkpoints/rsrefseg-b_official.py \\
        checkpoints/rsrefseg-b_official.pth
"""  # noqa: E501
import argparse
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch

from rsrefseg_mm.models.sam import hf_sam_key_map
from rsrefseg_mm.utils import allow_unsafe_load
from rsrefseg_mm.utils import official_checkpoint as official
from rsrefseg_mm.utils.official_checkpoint import (PEFT_PREFIX,
                                                   check_peft_adapters, depeft,
                                                   lora_rank,
                                                   read_official_state_dict)

#: Top-level modules of the authors' ``RefSegEncoderDecoder``.
GROUPS = ('backbone', 'clip_vision_encoder', 'clip_text_encoder',
          'sam_prompt_encoder', 'sam_mask_decoder', 'prompter_down_channel',
          'prompter_down_spatial')
PEFT = PEFT_PREFIX
#: LoRA that PEFT attaches but nn.MultiheadAttention never applies.
IDLE_LORA = re.compile(r'^model\.head\.attention\.out_proj\.lora_[AB]\.')
PROMPT_PE = 'model.shared_embedding.positional_embedding'
TOWERS = {
    'SAM image encoder': 'decode_head.image_encoder.',
    'SigLIP image tower': 'backbone.vision_model.',
    'SigLIP text tower': 'backbone.text_model.',
}
HF_SAM_DECODER_EPS = 1e-6
#: The authors' file (shared with the RSRefSeg 2 converter).
read_official = read_official_state_dict


def split_groups(state: Dict[str, torch.Tensor],
                 path: str) -> Dict[str, Dict[str, torch.Tensor]]:
    """Group keys by the authors' module; PEFT's ``base_model.model.``
    wrapper is removed.

    Raises:
        ValueError: A checkpoint of another layout, a missing module, keys
            of no module, or PEFT tensors other than LoRA ``default``.
    """
    if any(
            k.startswith(('decode_head.image_encoder.', 'neck.fuse.'))
            for k in state):
        raise ValueError(
            f'{path} is already in rsrefseg-mm\'s layout (decode_head.*, '
            'neck.*): pass it to tools/test.py directly')
    groups: Dict[str, Dict[str, torch.Tensor]] = {g: {} for g in GROUPS}
    unknown = []
    for k, v in state.items():
        group, _, rest = k.partition('.')
        if group not in groups:
            unknown.append(k)
            continue
        if rest.startswith(PEFT):
            rest = rest[len(PEFT):]
        groups[group][rest] = v
    absent = [g for g in GROUPS if not groups[g]]
    if len(absent) == len(GROUPS):
        raise ValueError(
            f'{path} is not a checkpoint of the authors\' RSRefSeg '
            f'(KyanChen/RSRefSeg RefSegEncoderDecoder): none of the modules '
            f'{list(GROUPS)}; its first keys are {list(state)[:5]}')
    if absent or unknown:
        raise ValueError(
            f'{path} does not have the authors\' RSRefSeg layout: modules '
            f'without tensors {absent}, keys of no module {unknown[:5]}')
    check_peft_adapters(state, path)
    return groups


def convert(
    state: Dict[str, torch.Tensor],
    path: str = '<state dict>'
) -> Tuple['OrderedDict[str, torch.Tensor]', dict]:
    """Convert the authors' state dict (see the module docstring).

    Returns:
        tuple[OrderedDict, dict]: rsrefseg-mm's state dict (fp32 floats)
        and a report: ``sources`` (output key -> input key), ``dropped``
        and ``added`` (key -> reason), ``ranks`` (tower -> LoRA rank or
        None), ``down_spatial_times``.

    Raises:
        ValueError: See :func:`split_groups`; also SAM keys of no known
            module, or LoRA ranks that differ within a tower.
    """
    groups = split_groups(state, path)
    out, sources, dropped = OrderedDict(), {}, {}

    def put(key: str, value: torch.Tensor, source: str) -> None:
        key = depeft(key)
        out[key] = value.float() if value.is_floating_point() else value
        sources[key] = source

    def origin(group: str, rest: str) -> str:
        key = f'{group}.{rest}'
        return key if key in state else f'{group}.{PEFT}{rest}'

    sam = {}
    for group, prefix in (('backbone', 'vision_encoder.'),
                          ('sam_prompt_encoder', 'prompt_encoder.'),
                          ('sam_mask_decoder', 'mask_decoder.')):
        for rest, v in groups[group].items():
            if group == 'sam_prompt_encoder' and rest == PROMPT_PE:
                dropped[origin(group, rest)] = (
                    'copy of the shared positional encoding; the authors\' '
                    'forward reads backbone.shared_image_embedding')
                continue
            name = rest if rest.startswith('shared_image_embedding.') else \
                prefix + rest[len('model.'):]
            sam[name] = (v, origin(group, rest))
    mapping = hf_sam_key_map(sam)
    unknown = [src for k, (_, src) in sam.items() if mapping[k] is None]
    if unknown:
        raise ValueError(f'{path}: SAM tensors of no SamModel module, e.g. '
                         f'{unknown[:5]}')
    for k, (v, src) in sam.items():
        put('decode_head.' + mapping[k], v, src)

    for group, tower in (('clip_vision_encoder', 'backbone.vision_model.'),
                         ('clip_text_encoder', 'backbone.text_model.')):
        for rest, v in groups[group].items():
            if IDLE_LORA.match(rest):
                dropped[origin(group, rest)] = (
                    'LoRA of the vision pooling head out_proj, never applied '
                    '(nn.MultiheadAttention reads the base weight)')
            elif rest.startswith('model.'):
                base = rest.replace('head.attention.out_proj.base_layer.',
                                    'head.attention.out_proj.')
                put(tower + base[len('model.'):], v, origin(group, rest))
            elif rest in ('logit_scale', 'logit_bias'):
                put('backbone.' + rest, v, origin(group, rest))
            else:
                raise ValueError(f'{path}: unknown SigLIP tensor '
                                 f'{origin(group, rest)}')

    for rest, v in groups['prompter_down_channel'].items():
        put('neck.fuse.' + rest, v, 'prompter_down_channel.' + rest)
    spatial = groups['prompter_down_spatial']
    last = max(int(k.split('.')[0]) for k in spatial)
    for rest, v in spatial.items():
        index, _, tail = rest.partition('.')
        if int(index) < last:
            key = f'neck.downsample.{rest}'
        elif tail in ('conv.weight', 'conv.bias'):
            key = 'neck.final_proj.' + tail[len('conv.'):]
        else:
            raise ValueError(f'{path}: prompter_down_spatial.{rest} is not '
                             'the final 1x1 projection (conv only)')
        put(key, v, 'prompter_down_spatial.' + rest)
    out['neck.logit_bias'] = torch.zeros(())
    added = {
        'neck.logit_bias':
        'filter bias 0: the authors add SigLIP\'s '
        'logit_bias alone'
    }

    ranks = {}
    for tower, prefix in TOWERS.items():
        try:
            ranks[tower] = lora_rank(out, prefix, tower)
        except ValueError as e:
            raise ValueError(f'{path}: {e}') from None
    report = dict(
        sources=sources,
        dropped=dropped,
        added=added,
        ranks=ranks,
        down_spatial_times=last)
    return out, report


def check_with_config(state: Dict[str, torch.Tensor], config: str,
                      alpha: float) -> None:
    """Build ``config``'s model and load ``state`` into it strictly (see
    :func:`rsrefseg_mm.utils.official_checkpoint.check_with_config`).

    Raises:
        ValueError: Missing / unexpected tensors, other shapes, or another
            LoRA scaling than ``alpha / rank``.
    """
    official.check_with_config(
        state,
        config,
        alpha,
        hint='LoRA rank, arch or down_spatial_times of the config')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    return official.converter_parser(
        'Convert a checkpoint trained with the RSRefSeg authors\' code '
        '(KyanChen/RSRefSeg) to rsrefseg-mm.',
        'rsrefseg-mm config to check the result against (strict load) and '
        'to inherit in <dst stem>.py with decoder_norm_eps=1e-6').parse_args(
            argv)


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    with allow_unsafe_load(args.unsafe_load):
        state = read_official(args.src)
    out, report = convert(state, args.src)
    if len(report['sources']) + len(report['dropped']) != len(state):
        raise RuntimeError('conversion lost track of tensors')
    if args.config:
        check_with_config(out, args.config, args.lora_alpha)
    official.save_converted(
        out,
        args.src,
        args.dst,
        decoder_norm_eps=HF_SAM_DECODER_EPS,
        lora_ranks=report['ranks'],
        lora_alpha=args.lora_alpha)
    print(f'{args.src}: {len(state)} tensors -> {args.dst}: {len(out)} '
          f'tensors ({len(report["sources"])} mapped, '
          f'{len(report["added"])} added, {len(report["dropped"])} dropped)')
    for k, why in {**report['dropped'], **report['added']}.items():
        print(f'  {"dropped" if k in report["dropped"] else "added"} {k}: '
              f'{why}')
    print(f'  LoRA ranks {report["ranks"]}, alpha {args.lora_alpha:g}; '
          f'prompter down_spatial_times {report["down_spatial_times"]}')
    if args.config:
        cfg_out = official.write_test_config(
            args.dst, args.src, args.config,
            'transformers\' SAM mask decoder LayerNorm eps',
            f'dict(decode_head=dict(decoder_norm_eps={HF_SAM_DECODER_EPS}))')
        print(f'  checked against {args.config} (strict); test with:\n'
              f'  python tools/test.py {cfg_out} {args.dst}')
    else:
        print('  test with: python tools/test.py CONFIG '
              f'{args.dst} --cfg-options '
              f'model.decode_head.decoder_norm_eps={HF_SAM_DECODER_EPS}')
    return report


if __name__ == '__main__':
    main()
