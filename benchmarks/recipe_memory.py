"""Parameters and training activation memory per triplet of the SSN recipes, on CPU.

Each recipe's model is built with random weights (no download) in its own subprocess; a
training forward (the loss) runs with saved-tensor hooks that add up every distinct tensor
autograd keeps for the backward pass, once with ``--batch`` triplets and once with twice as
many: the difference divided by ``--batch`` is the activation memory of one triplet (weights,
which autograd also saves, and their 16-bit copies under AMP do not grow with the batch and
cancel out). Under AMP (``--amp``: bf16 autocast on CPU, the same 2 bytes as fp16 on a GPU) most
of them are 16-bit. With gradient checkpointing, autograd keeps only each CLIP block's input
(counted from the shapes: layers x tokens x width) plus what lies outside the blocks (measured).

    python benchmarks/recipe_memory.py                  # all recipes, fp32 and AMP
    python benchmarks/recipe_memory.py --recipes configs/cirr/ssn_vit_b16.py --batch 2
"""
import argparse
import json
import platform
import subprocess
import sys
import time

import torch
from mmengine.config import Config
from mmengine.structures import BaseDataElement

import ssn_plugin.models  # noqa: F401
from ssn_plugin.models.clip_backbone import skip_pretrained_weights
from ssn_plugin.registry import MODELS

RECIPES = ['configs/cirr/ssn.py', 'configs/cirr/ssn_vit_b16.py', 'configs/cirr/ssn_vit_l14.py',
           'configs/cirr/ssn_vit_h14.py']
# A CIRR-length caption (CIRR's captions average about 11 words).
CAPTION = 'remove the two dogs and make the background a sunny beach with people'


def saved_bytes(model, batch: int, amp: bool) -> int:
    """Bytes of the distinct tensors autograd saves in one training forward."""
    size = model.image_size
    inputs = dict(ref_img=torch.randn(batch, 3, *size), tgt_img=torch.randn(batch, 3, *size))
    samples = [BaseDataElement(text=CAPTION) for _ in range(batch)]
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
        losses = model.loss(inputs, samples)
    del losses
    return sum(storages.values())


def checkpointed_inputs_bytes(model, batch: int, amp: bool) -> int:
    """What gradient checkpointing keeps: each CLIP block's input, from the shapes."""
    clip = model.clip
    if not clip.grad_checkpointing:
        return 0
    width = 2 if amp else 4
    visual = clip.model.visual.transformer
    text = clip._text.transformer
    text_tokens = len(clip.tokenizer.encode(CAPTION)) + 2  # BOS, EOS
    # Two images per triplet (reference, target), one caption.
    return width * batch * (2 * visual.layers * clip.num_image_tokens * visual.width
                            + text.layers * text_tokens * text.width)


def run_case(recipe: str, batch: int, amp: bool) -> dict:
    cfg = Config.fromfile(recipe)
    skip_pretrained_weights(cfg.model)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.train()
    start = time.perf_counter()
    measured = saved_bytes(model, 2 * batch, amp) - saved_bytes(model, batch, amp)
    return dict(
        recipe=recipe, arch=cfg.model.backbone.arch, amp=amp, batch=batch,
        grad_checkpointing=model.clip.grad_checkpointing,
        params_m=sum(p.numel() for p in model.parameters()) / 1e6,
        trainable_m=sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
        activation_mib_per_triplet=(measured + checkpointed_inputs_bytes(model, batch, amp))
        / batch / 2**20,
        weights_mib=sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20,
        forward_s=time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--recipes', nargs='+', default=RECIPES)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--case', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        recipe, amp = json.loads(args.case)
        print(json.dumps(run_case(recipe, args.batch, amp)))
        return
    print(f'# {time.strftime("%Y-%m-%d")}, {platform.processor() or platform.machine()}, '
          f'{torch.get_num_threads()} threads, torch {torch.__version__}, batch {args.batch}')
    print('| recipe | arch | params (M) | trainable (M) | grad ckpt | activations / triplet, '
          'fp32 (MiB) | activations / triplet, AMP (MiB) |')
    print('|---|---|---:|---:|---|---:|---:|')
    for recipe in args.recipes:
        rows = []
        for amp in (False, True):
            out = subprocess.run([sys.executable, __file__, '--batch', str(args.batch),
                                  '--case', json.dumps([recipe, amp])],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        fp32, amp16 = rows
        print(f'| {recipe} | {fp32["arch"]} | {fp32["params_m"]:.1f} | '
              f'{fp32["trainable_m"]:.1f} | {fp32["grad_checkpointing"]} | '
              f'{fp32["activation_mib_per_triplet"]:.1f} | '
              f'{amp16["activation_mib_per_triplet"]:.1f} |', flush=True)


if __name__ == '__main__':
    main()
