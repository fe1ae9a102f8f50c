"""SSN's training objective (docs/method.md, section 2)."""
from typing import Dict, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ssn_plugin.registry import MODELS


def scaled_logits(query: torch.Tensor, target: torch.Tensor,
                  logit_scale: float) -> torch.Tensor:
    """``logit_scale * query @ target.T`` in fp32, also under autocast.

    With scale 100, bf16's 8-bit mantissa would quantise the logits in steps of up to 0.5 and
    fp16 softmax saturates; autocast would run this matmul in low precision (``.float()`` on
    the inputs is not enough), so it is switched off here.
    """
    with torch.autocast(device_type=query.device.type, enabled=False):
        return logit_scale * query.float() @ target.float().t()


def gather_with_grad(features: torch.Tensor) -> torch.Tensor:
    """Concatenate ``features`` [B, D] of every process in rank order, keeping the autograd
    graph (the gradient of each process's slice comes back to it, summed over processes).

    Every process then computes the loss of the global batch; DDP's gradient averaging turns
    the summed gradients back into those of one process with the whole batch. Batches must
    have the same size on every process (``drop_last=True``). One process: unchanged.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features
    return _GatherWithGrad.apply(features)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward sums the gradient over processes and returns this
    process's slice (what ``torch.distributed.nn.all_gather`` does; that one is deprecated)."""

    @staticmethod
    def forward(ctx, features: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(features) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, features.contiguous())
        ctx.rows = slice(dist.get_rank() * features.shape[0],
                         (dist.get_rank() + 1) * features.shape[0])
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rows]


def symmetric_info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Mean of query->target and target->query cross-entropy; row i's positive is column i."""
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def kl_mean(target_log_prob: torch.Tensor, input_log_prob: torch.Tensor) -> torch.Tensor:
    """``nn.KLDivLoss()`` with its default ``reduction='mean'``: sum P(log P - log Q) / B^2.

    The release uses this reduction (not ``batchmean``); we keep it so that ``kl_weight`` means
    what it means there. P is given as log-probabilities: with logit scale 100 a confident
    softmax underflows to exact zeros, where the gradient of P log P in probability space is
    -inf (training turns to NaN); in log space it stays finite.
    """
    return F.kl_div(input_log_prob, target_log_prob, reduction='sum',
                    log_target=True) / target_log_prob.numel()


def ssn_kl_term(logits_pos: torch.Tensor, logits_neg: torch.Tensor,
                logit_scale: float) -> torch.Tensor:
    """KL(P_I || softmax(logits+)) - KL(softmax(logits+) || softmax(logits-)).

    P_I is the row softmax of ``logit_scale * I`` (the release's one-hot-like target). The
    second term is subtracted: the complementary branch (I-, L-) is pushed away from the main
    branch's retrieval distribution. Gradients flow through both arguments, as in the release.
    """
    eye = torch.eye(logits_pos.shape[0], device=logits_pos.device, dtype=logits_pos.dtype)
    log_p_identity = F.log_softmax(logit_scale * eye, dim=1)
    log_p_pos = F.log_softmax(logits_pos, dim=1)
    log_p_neg = F.log_softmax(logits_neg, dim=1)
    return kl_mean(log_p_identity, log_p_pos) - kl_mean(log_p_pos, log_p_neg)


@MODELS.register_module()
class SSNLoss(nn.Module):
    """Symmetric InfoNCE on the main branch plus ``kl_weight`` times the KL term.

    Args:
        logit_scale (float): Fixed inverse temperature on cosine similarities. Defaults to 100.
        kl_weight (float): Weight of the KL term. The release reads ``args.kl_weight`` but never
            defines it, so its value is unknown; 0.1 is our choice, not the paper's.
            Defaults to 0.1.
        gather (bool): In distributed training, compute both terms over the global batch:
            queries and targets of every process, with gradients (:func:`gather_with_grad`), so
            N processes x B/N equal one process x B. False: each process's own batch only
            (B/N negatives per query). Defaults to False.
    """

    def __init__(self, logit_scale: float = 100.0, kl_weight: float = 0.1,
                 gather: bool = False):
        super().__init__()
        self.logit_scale = logit_scale
        self.kl_weight = kl_weight
        self.gather = gather

    def forward(self, query_pos: torch.Tensor, query_neg: Optional[torch.Tensor],
                target: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Compute the losses from L2-normalised features.

        Args:
            query_pos (Tensor): q+ [B, D], from the (prototype, L+) branch.
            query_neg (Tensor, optional): q- [B, D], from the complementary (I-, L-) branch;
                None skips the KL term (SSN without degradation).
            target (Tensor): k [B, D], the target features; row i is query i's target.

        Returns:
            dict: ``loss_con`` and ``loss_kl`` (already weighted; both summed by MMEngine) and
            ``kl_raw`` (the unweighted KL term, logged only).
        """
        if self.gather:
            query_pos, target = gather_with_grad(query_pos), gather_with_grad(target)
            query_neg = None if query_neg is None else gather_with_grad(query_neg)
        # Logits, softmax and KL in fp32 whatever autocast chose for the features.
        with torch.autocast(device_type=target.device.type, enabled=False):
            logits_pos = scaled_logits(query_pos, target, self.logit_scale)
            losses = dict(loss_con=symmetric_info_nce(logits_pos))
            if self.kl_weight and query_neg is not None:
                logits_neg = scaled_logits(query_neg, target, self.logit_scale)
                kl = ssn_kl_term(logits_pos, logits_neg, self.logit_scale)
                losses['loss_kl'] = self.kl_weight * kl
                losses['kl_raw'] = kl.detach()
        return losses


@MODELS.register_module()
class QueryToTargetCELoss(nn.Module):
    """CLIP4Cir's loss: cross-entropy of ``logit_scale`` x cos(query_i, target_j) with the
    target of each query as its class, query -> target only (SSNLoss's InfoNCE is symmetric).

    Args:
        logit_scale (float): Fixed inverse temperature. Defaults to 100 (CLIP4Cir's).
        gather (bool): In distributed training, over the global batch (as :class:`SSNLoss`).
            Defaults to False.
    """

    def __init__(self, logit_scale: float = 100.0, gather: bool = False):
        super().__init__()
        self.logit_scale = logit_scale
        self.gather = gather

    def forward(self, query: torch.Tensor, query_neg: Optional[torch.Tensor],
                target: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``loss_ce`` from L2-normalised queries and targets [B, D] (``query_neg`` is
        ignored: one branch)."""
        if self.gather:
            query, target = gather_with_grad(query), gather_with_grad(target)
        with torch.autocast(device_type=target.device.type, enabled=False):
            logits = scaled_logits(query, target, self.logit_scale)
            labels = torch.arange(logits.shape[0], device=logits.device)
            return dict(loss_ce=F.cross_entropy(logits, labels))
