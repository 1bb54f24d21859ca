"""LFQ auxiliary loss (commitment + entropy penalty): forward + backward, time and peak memory.

Ours (``vistok.quantizers.LFQ``, exact entropies through the bitwise factorization) against
``vector_quantize_pytorch.LFQ`` 1.32.0, measured in the same run:

* the peer's exact mode (one codebook of 2^K: it builds N x 2^K matrices), skipped where its
  estimated memory exceeds ``--mem-budget-gib``;
* the peer's cheapest grouped approximation at 2^18: ``num_codebooks=2`` codebooks of 2^9, whose
  "codebook entropy" is the mean of the two 9-bit marginal entropies, not the 18-bit joint one.

Workload: latents ``4 x K x 5 x 16 x 16`` (5120 tokens, the paper's 17x128x128 clip batch of 4),
standard normal, tau = 0.01 (peer: ``inv_temperature=100``), commitment weight 0.25, entropy
weight 0.1 (ours without annealing), diversity weight 1, code scale 1. The timed step is
``loss = quantizer(latents).<aux loss>; loss.backward()``.

Each configuration runs in a fresh subprocess with ``torch.set_num_threads(2)``: warm-up, then the
median over repeats, and the process's peak RSS (``VmHWM``), so each peak belongs to one
configuration. A baseline child that only imports torch and builds the latents shows how much of
each peak is the quantizer's own.

    python bench/lfq.py                 # needs the peer: pip install -e '.[bench]' (or `make bench`)
    python bench/lfq.py --repeats 3     # quicker

Timings on a shared 2-core machine are noisy: compare ratios from one run, and re-run when idle.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

TOKENS_SHAPE = (4, 5, 16, 16)  # b t h w: 5120 tokens
PEER = "vector_quantize_pytorch"
PEER_VERSION = "1.32.0"
# The peer's exact mode holds about this many N x 2^K float32 matrices at its peak (distance,
# scaled logits, softmax, clamp, log, product, and their gradients in backward): 7.2 measured at
# 2^14 on 5120 tokens. Used to decide whether to run it at all.
PEER_EXACT_MATRICES = 8
PEER_IMPORT_MIB = 350  # torch + the peer's imports, measured
MiB = 2**20
GiB = 2**30


# -- child: one configuration ---------------------------------------------------------------------


def peak_rss_bytes() -> int:
    """This process's peak resident set (VmHWM): unlike ru_maxrss it is not inherited across exec."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_child(cfg: dict) -> dict:
    import torch

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    bits = cfg["bits"]
    b, t, h, w = TOKENS_SHAPE
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(b, bits, t, h, w, generator=generator).requires_grad_()  # b K t h w
    result: dict = {}
    if cfg["impl"] == "baseline":
        result["peak_rss"] = peak_rss_bytes()
        return result

    if cfg["impl"] == "ours":
        from vistok.quantizers import LFQ, EntropyWeightSchedule

        quantizer = LFQ(
            bits=bits,
            entropy_temperature=0.01,
            commitment_weight=0.25,
            entropy_schedule=EntropyWeightSchedule(weight=0.1, start_factor=1.0),
            diversity_weight=1.0,
        ).train()

        def step():
            out = quantizer(latents)
            out.loss.backward()
            return out.per_sample_entropy, out.codebook_entropy

    else:
        from vector_quantize_pytorch import LFQ as PeerLFQ

        groups = cfg["codebooks"]
        quantizer = PeerLFQ(
            dim=bits,
            codebook_size=2 ** (bits // groups),
            num_codebooks=groups,
            entropy_loss_weight=0.1,
            commitment_loss_weight=0.25,
            diversity_gamma=1.0,
            codebook_scale=1.0,
            frac_per_sample_entropy=1.0,  # all tokens, as ours
            channel_first=True,
        ).train()

        def step():
            (_, _, aux_loss), breakdown = quantizer(latents, inv_temperature=100.0, return_loss_breakdown=True)
            aux_loss.backward()
            return breakdown.per_sample_entropy, breakdown.batch_entropy

    for _ in range(cfg["warmup"]):
        step()
        latents.grad = None
    times = []
    started = time.perf_counter()
    while len(times) < cfg["repeats"]:
        t0 = time.perf_counter()
        per_sample, codebook = step()
        times.append(time.perf_counter() - t0)
        latents.grad = None
        if len(times) >= 3 and time.perf_counter() - started > cfg["max_seconds"]:
            break
    result.update(
        peak_rss=peak_rss_bytes(),
        median_s=statistics.median(times),
        times=times,
        per_sample_entropy=float(per_sample),
        codebook_entropy=float(codebook),
    )
    if cfg["impl"] == "ours":
        result.update(ours_under_peer_conventions(latents.detach(), bits))
    return result


def ours_under_peer_conventions(latents, bits: int) -> dict:
    """Our exact mean distribution, read with the peer's conventions (after timing; not timed).

    The peer takes ``log(p.clamp(min=1e-5))``; at 2^18 codes on 5120 tokens most mean probabilities
    lie below 1e-5, so its exact value is not the entropy there. Also the 9-bit marginals of the
    same distribution, whose entropies the peer's 2 x 2^9 grouped mode averages.
    """
    import torch
    from einops import rearrange

    from vistok.quantizers.lfq import bit_table, group_distribution

    low_bits, high_bits = bits // 2, bits - bits // 2
    logits = rearrange(latents.double(), "b k ... -> (b ...) k") * (4.0 / 0.01)  # (n, K)
    low = group_distribution(logits[:, :low_bits], bit_table(low_bits, dtype=torch.float64))
    high = group_distribution(logits[:, low_bits:], bit_table(high_bits, dtype=torch.float64))
    mean_prob = low.T @ high / logits.shape[0]  # (2^Ka, 2^Kb)

    def entropy(p, eps):
        return float(-(p * p.clamp_min(eps).log()).sum())

    tiny = torch.finfo(torch.float64).tiny
    return {
        "codebook_entropy_f64": entropy(mean_prob, tiny),
        "codebook_entropy_eps1e-5": entropy(mean_prob, 1e-5),
        "marginal_entropies": [entropy(mean_prob.sum(1), tiny), entropy(mean_prob.sum(0), tiny)],
    }


# -- parent: run the children, print the table ----------------------------------------------------


def peer_exact_estimate_bytes(bits: int) -> int:
    tokens = 1
    for s in TOKENS_SHAPE:
        tokens *= s
    return PEER_EXACT_MATRICES * tokens * 2**bits * 4 + PEER_IMPORT_MIB * MiB


def spawn(cfg: dict, timeout: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {"error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"}


def fmt_time(r: dict) -> str:
    return f"{r['median_s'] * 1e3:9.1f} ms" if "median_s" in r else ""


def fmt_mib(nbytes: float) -> str:
    return f"{nbytes / MiB:7.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[10, 14, 18])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=30.0, help="stop repeating (after 3) past this")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mem-budget-gib", type=float, default=12.0, help="skip peer runs estimated above this")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(run_child(json.loads(args.child))), flush=True)
        return

    have_peer = importlib.util.find_spec(PEER) is not None
    if have_peer:
        version = importlib.metadata.version("vector-quantize-pytorch")
        peer_note = f"vector-quantize-pytorch {version}"
        if version != PEER_VERSION:
            peer_note += f" (the comparison was written for {PEER_VERSION})"
    else:
        peer_note = f"not installed: pip install -e '.[bench]' (or `make bench`) for vector-quantize-pytorch=={PEER_VERSION}"
    tokens = 1
    for s in TOKENS_SHAPE:
        tokens *= s
    print(f"LFQ aux loss forward + backward, {tokens} tokens, threads={args.threads}; peer: {peer_note}")
    load = os.getloadavg()[0]
    print(f"machine load average (1 min) at start: {load:.2f} on {os.cpu_count()} cores")
    if load > 0.5:
        print("  the machine is busy: multi-threaded timings degrade badly when other processes hold the cores")
    common = dict(threads=args.threads, repeats=args.repeats, warmup=args.warmup, max_seconds=args.max_seconds)
    timeout = 10 * args.max_seconds + 120

    rows = []  # (label, bits, result)
    baseline = spawn(dict(common, impl="baseline", bits=max(args.bits)), timeout)
    rows.append(("baseline: import torch + latents", max(args.bits), baseline))
    for bits in args.bits:
        rows.append(("ours exact", bits, spawn(dict(common, impl="ours", bits=bits), timeout)))
        if not have_peer:
            continue
        estimate = peer_exact_estimate_bytes(bits)
        if estimate > args.mem_budget_gib * GiB:
            peer = {"skipped": f"skipped (needs ~{estimate / GiB:.0f} GiB > budget {args.mem_budget_gib:g} GiB)"}
        else:
            peer = spawn(dict(common, impl="peer", bits=bits, codebooks=1), timeout)
            peer["estimate"] = estimate
        rows.append(("peer exact (1 x 2^K)", bits, peer))
        if bits % 2 == 0 and bits == max(args.bits):
            grouped = spawn(dict(common, impl="peer", bits=bits, codebooks=2), timeout)
            rows.append((f"peer grouped (2 x 2^{bits // 2})", bits, grouped))

    base_rss = baseline.get("peak_rss", 0)
    print()
    print(f"{'configuration':34} {'vocab':>6} {'median':>12} {'peak RSS':>11} {'above base':>11}   H_cb (nats)  H_ps (nats)")
    for label, bits, r in rows:
        vocab = f"2^{bits}" if "baseline" not in label else ""
        if "skipped" in r or "error" in r:
            print(f"{label:34} {vocab:>6}   {r.get('skipped') or r.get('error')}")
            continue
        rss = r["peak_rss"]
        above = fmt_mib(rss - base_rss) if "baseline" not in label else ""
        ent = f"   {r['codebook_entropy']:11.5f}  {r['per_sample_entropy']:11.5f}" if "codebook_entropy" in r else ""
        print(f"{label:34} {vocab:>6} {fmt_time(r):>12} {fmt_mib(rss):>11} {above:>11}{ent}")
        if "estimate" in r:
            print(f"{'':34} {'':>6} {'':>12} {'(est. ' + fmt_mib(r['estimate']).strip() + ')':>11}")

    by = {(label.split(" (")[0], bits): r for label, bits, r in rows}
    if have_peer:
        print("\nratios (ours / peer; < 1 means ours is faster or smaller):")
    else:
        print(f"\nno ratios: the peer is {peer_note}")
    for bits in args.bits:
        ours = by.get(("ours exact", bits), {})
        for name in ("peer exact", "peer grouped"):
            peer = by.get((name, bits), {})
            if "median_s" not in ours or "median_s" not in peer:
                continue
            print(
                f"  2^{bits:<2} vs {name:12}: time {ours['median_s'] / peer['median_s']:6.2f}x   "
                f"peak RSS {ours['peak_rss'] / peer['peak_rss']:5.2f}x   "
                f"above baseline {(ours['peak_rss'] - base_rss) / max(peer['peak_rss'] - base_rss, 1):5.2f}x"
            )

    print("\ncodebook entropy agreement (nats; ours float32 as trained, and our exact mean distribution")
    print("re-read in float64, with the peer's log(clamp(p, 1e-5)) convention, and as 9-bit marginals):")
    for bits in args.bits:
        ours = by.get(("ours exact", bits), {})
        if "codebook_entropy" not in ours:
            continue
        line = (
            f"  2^{bits:<2}: ours {ours['codebook_entropy']:.6f}  (f64 {ours['codebook_entropy_f64']:.6f}, "
            f"eps=1e-5 {ours['codebook_entropy_eps1e-5']:.6f})"
        )
        peer = by.get(("peer exact", bits), {})
        if "codebook_entropy" in peer:
            line += (
                f"   peer exact {peer['codebook_entropy']:.6f}"
                f"  |peer - ours(eps=1e-5)| = {abs(peer['codebook_entropy'] - ours['codebook_entropy_eps1e-5']):.1e}"
            )
        elif peer:
            line += "   peer exact: " + (peer.get("skipped") or peer.get("error", ""))
        print(line)
        grouped = by.get(("peer grouped", bits), {})
        if "codebook_entropy" in grouped:
            m = ours["marginal_entropies"]
            print(
                f"        peer 2 x 2^{bits // 2} grouped: {grouped['codebook_entropy']:.6f} = the mean of the two "
                f"{bits // 2}-bit marginal entropies (ours: {m[0]:.6f}, {m[1]:.6f}, mean {sum(m) / 2:.6f})."
            )
            print(
                f"        Their sum {sum(m):.4f} exceeds the joint {ours['codebook_entropy_f64']:.4f} by the mutual "
                f"information between the halves, {sum(m) - ours['codebook_entropy_f64']:.4f} nats, which the "
                f"grouped penalty cannot see."
            )
            print(
                f"        per-sample entropy: ours (sum over {bits} bits) {ours['per_sample_entropy']:.6f}, peer "
                f"grouped (mean over 2 groups) {grouped['per_sample_entropy']:.6f}"
            )

    top = max(args.bits)
    ours, grouped = by.get(("ours exact", top), {}), by.get(("peer grouped", top), {})
    if "median_s" in ours:
        print(f"\ntarget at 2^{top}: peak RSS < 700 MiB: {'yes' if ours['peak_rss'] < 700 * MiB else 'NO'} "
              f"({fmt_mib(ours['peak_rss']).strip()})", end="")
        if "median_s" in grouped:
            ok = ours["median_s"] <= grouped["median_s"]
            print(f"; time <= peer 2 x 2^{top // 2} grouped: {'yes' if ok else 'NO'} "
                  f"({ours['median_s'] * 1e3:.1f} vs {grouped['median_s'] * 1e3:.1f} ms)")
        else:
            print()
    print(f"load average (1 min) at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
