"""Vector quantization: nearest-neighbour lookup in a codebook (VQ-VAE, van den Oord et al. 2017).

Each token ``z`` (one position of ``latents (b, d, ...)``, all ``d`` channels) is replaced by its
nearest codebook vector ``e_k`` and the token index is ``k``. Gradients pass straight through to the
encoder. On top of the original design this module has the options later tokenizers rely on:

* **EMA codebook** (``ema=True``; VQ-VAE appendix A.1, Razavi et al. 2019): the codebook is not
  learned by gradient descent but tracks, per code, exponential moving averages of the number of
  tokens assigned to it (``cluster_size``) and of their sum (``embed_sum``); the code is their
  ratio. Cluster sizes are Laplace-smoothed so that a code with (almost) no assignments does not
  divide by zero. With ``ema=False`` the codebook is a parameter trained by the codebook loss
  ``||sg(z) - q||^2`` (VQ-VAE eq. 3).
* **Factorized, l2-normalized codes** (``codebook_dim``, ``l2_normalize``; ViT-VQGAN, Yu et al.
  2022, section 3.2, used by OmniTokenizer): latents are projected to a small ``codebook_dim`` and
  l2-normalized, as are the codes, so the lookup is by cosine similarity. This improves codebook
  usage; ``codes`` is the result projected back to ``dim`` channels.
* **Dead-code restart** (``dead_code_threshold``; the "random restarts" of Jukebox, Dhariwal et al.
  2020): in training, a code whose EMA usage fell below the threshold is moved onto a random
  latent of the current batch, so it gets assignments again instead of staying unused forever.
* **Distributed statistics**: under ``torch.distributed`` the per-code counts and sums are
  all-reduced, so every rank applies the same EMA update (that of the global batch) and the
  codebooks stay identical without broadcasting them; only the replacement vectors of a dead-code
  restart are broadcast from rank 0.

The nearest-neighbour search never builds the full ``(tokens x codes)`` distance matrix: it runs
over chunks of tokens (``chunk_tokens``), so the memory is ``O(chunk x codebook_size)``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from vistok.errors import VistokError
from vistok.quantizers.base import Quantizer, QuantizerOutput, autocast_off, straight_through
from vistok.quantizers.distributed import all_reduce_sum, should_sync

# Elements of one (tokens x codes) block of scores in the nearest-neighbour search: 16 MiB in
# float32. At codebook_size 8192 that is 512 tokens per chunk -- big enough to keep the matrix
# product efficient, small enough that a 17x128x128 video batch does not allocate gigabytes.
SEARCH_BLOCK_ELEMENTS = 2**22


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Distances and statistics run in float32 (float64 if the input is float64), never in half."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_positive_int(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise VistokError(f"{name} must be a positive integer, got {value!r}")
    return value


class VQ(Quantizer):
    """Vector quantizer with an EMA or learned codebook.

    Args:
        dim: channels of the latents (and of the codes).
        codebook_size: number of codes ``K`` (OmniTokenizer: 8192).
        codebook_dim: channels of the codebook. When it differs from ``dim``, latents are projected
            ``dim -> codebook_dim`` before the lookup and codes back ``codebook_dim -> dim``
            (ViT-VQGAN's factorized codes, e.g. 32 channels).
        l2_normalize: l2-normalize latents and codes in codebook space, so the nearest code is the
            one of highest cosine similarity (ViT-VQGAN, OmniTokenizer).
        ema: update the codebook by exponential moving averages (no gradient); ``False`` learns it
            with the codebook loss.
        decay: EMA decay per training step (also used for the usage statistics of
            ``dead_code_threshold`` when ``ema=False``).
        epsilon: Laplace-smoothing pseudo-count of the EMA cluster sizes.
        commitment_weight: beta of the commitment loss ``||z - sg(q)||^2`` (VQ-VAE: 0.25).
        codebook_weight: weight of the codebook loss ``||sg(z) - q||^2`` (only with ``ema=False``).
        dead_code_threshold: in training, restart codes whose EMA usage (expected tokens per batch
            assigned to the code) is below this value; ``0`` disables restarts.
        chunk_tokens: tokens per block of the nearest-neighbour search; default
            ``SEARCH_BLOCK_ELEMENTS // codebook_size``.
        sync_distributed: ``"auto"`` all-reduces codebook statistics in training when
            ``torch.distributed`` is initialized with more than one rank; ``True``/``False`` force it.

    Codebook state: ``codebook (K, codebook_dim)`` (a buffer with ``ema=True``, else a parameter),
    ``cluster_size (K,)`` the EMA usage, and with ``ema=True`` ``embed_sum (K, codebook_dim)``.
    Both EMA accumulators start as if each code had been assigned once, to itself
    (``cluster_size = 1``, ``embed_sum = codebook``), so ``codebook = embed_sum / cluster_size``
    holds from the first step and an unused code decays in place instead of collapsing to zero.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int = 8192,
        *,
        codebook_dim: int | None = None,
        l2_normalize: bool = False,
        ema: bool = True,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        commitment_weight: float = 0.25,
        codebook_weight: float = 1.0,
        dead_code_threshold: float = 0.0,
        chunk_tokens: int | None = None,
        sync_distributed: bool | str = "auto",
    ):
        super().__init__()
        _check_positive_int("VQ dim", dim)
        _check_positive_int("VQ codebook_size", codebook_size)
        codebook_dim = dim if codebook_dim is None else _check_positive_int("VQ codebook_dim", codebook_dim)
        if not 0.0 <= decay < 1.0:
            raise VistokError(f"VQ decay must lie in [0, 1), got {decay}")
        if epsilon <= 0:
            raise VistokError(f"VQ epsilon (Laplace smoothing) must be > 0, got {epsilon}")
        if commitment_weight < 0 or codebook_weight < 0:
            raise VistokError(
                f"VQ loss weights must be non-negative, got commitment_weight={commitment_weight}, "
                f"codebook_weight={codebook_weight}"
            )
        if dead_code_threshold < 0:
            raise VistokError(f"VQ dead_code_threshold must be >= 0 (0 disables), got {dead_code_threshold}")
        if chunk_tokens is not None:
            _check_positive_int("VQ chunk_tokens", chunk_tokens)
        if sync_distributed not in ("auto", True, False):
            raise VistokError(f"sync_distributed must be 'auto', True or False, got {sync_distributed!r}")

        self.dim = dim
        self.code_dim = dim
        self.codebook_size = codebook_size
        self.codebook_dim = codebook_dim
        self.l2_normalize = bool(l2_normalize)
        self.ema = bool(ema)
        self.decay = float(decay)
        self.epsilon = float(epsilon)
        self.commitment_weight = float(commitment_weight)
        self.codebook_weight = float(codebook_weight)
        self.dead_code_threshold = float(dead_code_threshold)
        self.chunk_tokens = chunk_tokens or max(1, SEARCH_BLOCK_ELEMENTS // codebook_size)
        self.sync_distributed = sync_distributed

        if codebook_dim != dim:
            self.project_in: nn.Linear | None = nn.Linear(dim, codebook_dim)
            self.project_out: nn.Linear | None = nn.Linear(codebook_dim, dim)
        else:
            self.project_in = self.project_out = None

        # Unit-Gaussian codes match the scale of normalized encoder outputs; codes far from the
        # data are what dead-code restarts are for.
        init = torch.randn(codebook_size, codebook_dim)
        if self.l2_normalize:
            init = F.normalize(init, dim=-1)
        if self.ema:
            self.register_buffer("codebook", init)
            self.register_buffer("embed_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("cluster_size", torch.ones(codebook_size))

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, codebook_dim={self.codebook_dim}, "
            f"l2_normalize={self.l2_normalize}, ema={self.ema}, decay={self.decay}, "
            f"dead_code_threshold={self.dead_code_threshold}"
        )

    # -- pieces shared by forward, quantize and indices_to_codes --------------------------------

    def _linear(self, layer: nn.Linear, x: Tensor) -> Tensor:
        # The projections run in the compute dtype (outside autocast), so the codes do not depend
        # on the caller's autocast context and indices_to_codes reproduces them exactly.
        return F.linear(x, layer.weight.to(x.dtype), layer.bias.to(x.dtype))

    def effective_codebook(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """``(K, codebook_dim)`` the vectors tokens are matched against (normalized if ``l2_normalize``)."""
        codebook = self.codebook.to(dtype)
        # The EMA buffer is stored normalized already; a learned parameter drifts off the sphere.
        if self.l2_normalize and not self.ema:
            codebook = F.normalize(codebook, dim=-1)
        return codebook

    def _embed(self, latents: Tensor) -> Tensor:
        """``(b, dim, ...)`` latents -> ``(n, codebook_dim)`` tokens in codebook space."""
        z = rearrange(latents, "b d ... -> (b ...) d").to(compute_dtype(latents.dtype))
        if self.project_in is not None:
            z = self._linear(self.project_in, z)
        if self.l2_normalize:
            z = F.normalize(z, dim=-1)
        return z

    def _unembed(self, q: Tensor, like_shape: tuple[int, ...]) -> Tensor:
        """``(n, codebook_dim)`` codes in codebook space -> ``(b, dim, ...)``."""
        if self.project_out is not None:
            q = self._linear(self.project_out, q)
        b, rest = like_shape[0], like_shape[1:]
        codes = q.reshape(b, *rest, self.dim)
        return rearrange(codes, "b ... d -> b d ...")

    @torch.no_grad()
    def nearest(self, z: Tensor, codebook: Tensor) -> Tensor:
        """Index of the nearest code for each row of ``z (n, c)``; ``(n,)`` int64.

        Euclidean: ``argmin_k ||z - e_k||^2 = argmin_k (||e_k||^2 - 2 z.e_k)`` (``||z||^2`` is the
        same for every k). l2-normalized: ``argmax_k z.e_k``. Ties go to the lowest index.
        """
        out = torch.empty(z.shape[0], dtype=torch.long, device=z.device)
        codebook_t = codebook.T
        squared_norms = None if self.l2_normalize else (codebook * codebook).sum(dim=-1)
        for start in range(0, z.shape[0], self.chunk_tokens):
            block = z[start : start + self.chunk_tokens]
            if squared_norms is None:
                out[start : start + block.shape[0]] = (block @ codebook_t).argmax(dim=-1)
            else:
                scores = torch.addmm(squared_norms, block, codebook_t, alpha=-2.0)  # (chunk, K)
                out[start : start + block.shape[0]] = scores.argmin(dim=-1)
        return out

    # -- token <-> code -------------------------------------------------------------------------

    def quantize(self, latents: Tensor) -> tuple[Tensor, Tensor]:
        """``(b, dim, ...)`` latents -> (codes ``(b, dim, ...)``, indices ``(b, ...)``); no losses, no updates."""
        self.check_latents(latents)
        with autocast_off(latents.device):
            z = self._embed(latents)
            codebook = self.effective_codebook(z.dtype).detach()
            indices = self.nearest(z.detach(), codebook)
            codes = self._unembed(straight_through(z, codebook[indices]), latents.shape[:1] + latents.shape[2:])
        return codes.to(latents.dtype), indices.view(latents.shape[:1] + latents.shape[2:])

    def indices_to_codes(self, indices: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """``(b, ...)`` integer indices -> ``(b, dim, ...)`` codes, exactly ``forward(...).codes`` in eval."""
        self.check_indices(indices)
        if indices.ndim < 1:
            raise VistokError(f"indices must have a batch axis, layout (b, ...), got shape {tuple(indices.shape)}")
        with autocast_off(indices.device):
            codebook = self.effective_codebook(compute_dtype(dtype))
            q = codebook[indices.reshape(-1).long()]
            codes = self._unembed(q, tuple(indices.shape))
        return codes.to(dtype)

    # -- training-time codebook maintenance ------------------------------------------------------

    @torch.no_grad()
    def _restart_dead_codes(self, z: Tensor, sync: bool) -> int:
        """Move codes with EMA usage below the threshold onto random latents ``z (n, c)`` of this batch.

        Runs before the lookup, so a restarted code competes for this batch's tokens at once. It
        restarts with usage exactly at the threshold: it survives only by winning tokens.
        """
        dead = self.cluster_size < self.dead_code_threshold
        n_dead = int(dead.sum())  # the same on every rank: cluster_size is all-reduced
        if n_dead == 0 or (z.shape[0] == 0 and not sync):
            return 0
        if z.shape[0] >= n_dead:
            pick = torch.randperm(z.shape[0], device=z.device)[:n_dead]
        else:
            pick = torch.randint(max(z.shape[0], 1), (n_dead,), device=z.device)
        new = z[pick] if z.shape[0] else z.new_zeros(n_dead, z.shape[1])
        if sync:
            # Rank 0 picks for everyone so the codebooks stay identical across ranks.
            new = new.contiguous()
            dist.broadcast(new, src=0)
        self.codebook[dead] = new.to(self.codebook.dtype)
        self.cluster_size[dead] = self.dead_code_threshold
        if self.ema:
            self.embed_sum[dead] = (new * self.dead_code_threshold).to(self.embed_sum.dtype)
        return n_dead

    @torch.no_grad()
    def _ema_update(self, z: Tensor, indices: Tensor, counts: Tensor, sync: bool) -> None:
        """One EMA step from this batch's (already all-reduced) ``counts (K,)`` and latents ``z (n, c)``."""
        decay = self.decay
        cluster_size = self.cluster_size.to(counts.dtype) * decay + counts * (1.0 - decay)
        self.cluster_size.copy_(cluster_size)
        if not self.ema:
            return  # the usage statistics alone (for dead-code restarts and logging)
        sums = torch.zeros(self.codebook_size, z.shape[1], dtype=z.dtype, device=z.device)
        sums.index_add_(0, indices, z)
        if sync:
            sums = all_reduce_sum(sums)
        embed_sum = self.embed_sum.to(z.dtype) * decay + sums * (1.0 - decay)
        # Laplace smoothing (add epsilon to every count, renormalize to the same total): a code
        # whose usage decayed to ~0 keeps a finite denominator.
        total = cluster_size.sum()
        smoothed = (cluster_size + self.epsilon) / (total + self.codebook_size * self.epsilon) * total
        codebook = embed_sum / smoothed.to(z.dtype)[:, None]
        if self.l2_normalize:
            codebook = F.normalize(codebook, dim=-1)
        self.embed_sum.copy_(embed_sum)
        self.codebook.copy_(codebook)

    # -- forward --------------------------------------------------------------------------------

    def forward(self, latents: Tensor) -> QuantizerOutput:
        """Quantize ``latents (b, dim, ...)``; see :class:`QuantizerOutput` for the fields.

        In training this also updates the codebook statistics (and, with ``ema=True``, the codebook)
        after the lookup, and restarts dead codes before it.
        """
        self.check_latents(latents)
        token_shape = latents.shape[:1] + latents.shape[2:]
        sync = should_sync(self.sync_distributed, self.training)
        with autocast_off(latents.device):
            z = self._embed(latents)  # (n, c)
            restarted = 0
            if self.training and self.dead_code_threshold > 0:
                restarted = self._restart_dead_codes(z.detach(), sync)
            codebook = self.effective_codebook(z.dtype)
            indices = self.nearest(z.detach(), codebook.detach())
            q = codebook[indices]  # (n, c); carries the codebook's gradient when learned

            commitment = F.mse_loss(z, q.detach())
            loss = self.commitment_weight * commitment
            if not self.ema:
                codebook_loss = F.mse_loss(z.detach(), q)
                loss = loss + self.codebook_weight * codebook_loss
            else:
                codebook_loss = torch.zeros((), dtype=z.dtype, device=z.device)

            # q detached: the decoder's gradient reaches the encoder only, never the codebook
            # (VQ-VAE eq. 3: the codebook learns from its own loss or from the EMA).
            codes = self._unembed(straight_through(z, q.detach()), token_shape)

            with torch.no_grad():
                counts = torch.bincount(indices, minlength=self.codebook_size).to(z.dtype)
                if sync:
                    counts = all_reduce_sum(counts)
                if self.training:
                    self._ema_update(z.detach(), indices, counts, sync)
                stats = self._stats(counts, codebook_loss, restarted)

        return QuantizerOutput(
            codes=codes.to(latents.dtype),
            indices=indices.view(token_shape),
            loss=loss,
            commitment_loss=commitment,
            stats=stats,
        )

    def _stats(self, counts: Tensor, codebook_loss: Tensor, restarted: int) -> dict[str, Tensor]:
        total = counts.sum()
        probs = counts / total.clamp_min(1)
        # 0 * log(tiny) = 0: unused codes contribute nothing, as they should.
        entropy = -(probs * probs.clamp_min(torch.finfo(probs.dtype).tiny).log()).sum()
        used = (counts > 0).sum().to(counts.dtype)
        stats = {
            "perplexity": entropy.exp(),
            "batch_usage": used / torch.clamp(total, min=1, max=self.codebook_size),
            "codes_used": used,
            "codebook_loss": codebook_loss.detach(),
            "codes_restarted": torch.tensor(float(restarted)),
        }
        if self.dead_code_threshold > 0:
            stats["dead_codes"] = (self.cluster_size < self.dead_code_threshold).sum().to(counts.dtype)
        return stats
