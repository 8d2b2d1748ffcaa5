"""ONNX Runtime next to eager PyTorch: first query and follow-up latency.

    python tools/analysis_tools/onnx_benchmark.py CONFIG [--checkpoint CKPT] \
        --model-dir DIR [--opset 20] [--repeats 5] [--threads 2] \
        [--cfg-options ...]

Builds the model (random weights unless ``--checkpoint``; the config's
pretrained paths are not read), exports it to ``--model-dir`` when that has
no ``deploy.json`` yet, then times on one random image, interleaved within
every repeat: the first query (image encoders + one expression) and a
follow-up expression on the encoded image, through PyTorch
(``encode_image`` + ``decode``, tokenizer included) and ONNX Runtime (both
graphs, tokenizer included). Prints medians, the ratios and the largest
logit difference. SigLIP configs need a ``spiece.model``
(``--cfg-options model.backbone.tokenizer=PATH``).
"""
import argparse
import os.path as osp
import sys
import time
from typing import Dict, List

import numpy as np
import torch
from mmengine.config import DictAction

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import benchmark_utils as bu  # noqa: E402

TEXTS = ('the large white storage tank at the lower left of the image',
         'the harbor in the middle')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--checkpoint', help='default: random weights')
    parser.add_argument(
        '--model-dir',
        required=True,
        help='exported model (exported here if missing)')
    parser.add_argument(
        '--opset',
        type=int,
        help='ONNX opset of the export (default: '
        'export_onnx\'s)')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument(
        '--threads', type=int, help='threads of both runtimes (default: all)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main(argv=None) -> Dict[str, dict]:
    import onnxruntime as ort

    from rsrefseg_mm.deployment import (DEFAULT_OPSET, export_onnx,
                                        model_input_size)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = bu.load_config(args.config, args.cfg_options)
    model = bu.build_model(cfg, 'cpu', args.checkpoint)
    if not osp.isfile(osp.join(args.model_dir, 'deploy.json')):
        start = time.perf_counter()
        info = export_onnx(
            model,
            cfg,
            args.model_dir,
            args.config,
            args.checkpoint,
            opset=args.opset or DEFAULT_OPSET,
            texts=TEXTS)
        print(f'exported in {time.perf_counter() - start:.1f} s: '
              f'{info["bytes"]} bytes')
    options = ort.SessionOptions()
    if args.threads:
        options.intra_op_num_threads = args.threads
    enc = ort.InferenceSession(
        osp.join(args.model_dir, 'image_encoder.onnx'), options)
    dec = ort.InferenceSession(
        osp.join(args.model_dir, 'decoder.onnx'), options)
    names = [i.name for i in dec.get_inputs()]
    h, w = model_input_size(cfg)
    image = (np.random.default_rng(0).random(
        (1, 3, h, w)) * 255).astype(np.float32)

    def tokens(text):
        out = model.backbone.tokenizer([text])
        return [
            t.numpy() for t in (out if isinstance(out, tuple) else (out, ))
        ]

    def ort_first():
        emb = enc.run(None, {'image': image})
        return emb, dec.run(None, dict(zip(names, emb + tokens(TEXTS[0]))))

    def ort_follow(emb):
        return dec.run(None, dict(zip(names, emb + tokens(TEXTS[1]))))

    def torch_first():
        emb = model.encode_image(torch.from_numpy(image))
        return emb, model.decode(emb, [TEXTS[0]])

    def torch_follow(emb):
        return model.decode(emb, [TEXTS[1]])

    times: Dict[str, List[float]] = {
        k: []
        for k in ('torch first', 'torch follow-up', 'onnxruntime first',
                  'onnxruntime follow-up')
    }
    diff = 0.
    with torch.no_grad():
        for r in range(args.warmup + args.repeats):
            t0 = time.perf_counter()
            t_emb, (t_logits, _) = torch_first()
            t1 = time.perf_counter()
            torch_follow(t_emb)
            t2 = time.perf_counter()
            o_emb, (o_logits, _) = ort_first()
            t3 = time.perf_counter()
            ort_follow(o_emb)
            t4 = time.perf_counter()
            diff = max(diff, float(np.abs(o_logits - t_logits.numpy()).max()))
            if r >= args.warmup:
                for key, value in zip(times,
                                      (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    times[key].append(value)
    res = {k: bu.summarize(v) for k, v in times.items()}
    med = {k: v['median'] for k, v in res.items()}
    print(f'\n### ONNX Runtime vs PyTorch: {osp.basename(args.config)}\n\n'
          f'{bu.env_line("cpu")}, onnxruntime {ort.__version__}\n')
    print('| query | PyTorch median s | ONNX Runtime median s | ORT / PyTorch '
          '|\n| --- | --- | --- | --- |')
    for q in ('first', 'follow-up'):
        pt, rt = med[f'torch {q}'], med[f'onnxruntime {q}']
        print(f'| {q} | {pt:.3f} | {rt:.3f} | {rt / pt:.2f} |')
    print(f'\nlargest logit difference: {diff:.2e} '
          f'({args.repeats} repeats, {args.warmup} warm-up)')
    return dict(times=res, max_abs_diff=diff)


if __name__ == '__main__':
    main()
