"""What the default (banded) CPU forward spends its time on, and whether its operations could run faster.

Prints three Markdown tables for RAMiT x2 (random weights) at one input size:

1. the forward's profile by operator (self time, calls, share);
2. the operations of one piece (4096 pixels, 64 channels) timed alone against their average time per call inside
   the forward: a ratio near 1 means an operation already runs at its kernel's own speed in the forward, so better
   locality (smaller pieces, reused buffers) has nothing to win back for it;
3. the window attention of one piece (3 heads of 16 channels, 64 windows of 64 pixels) computed four ways: per head
   with batched products (the banded path), one chain of 4-D products, `scaled_dot_product_attention`, and oneDNN
   Graph's fusion of the whole chain (TorchScript with `torch.jit.enable_onednn_fusion`).

    python scripts/benchmark_ops.py --size 256 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from measuring import time_calls, timed
from torch.profiler import ProfilerActivity, profile

from ramit_hf import RamitConfig, RamitForImageRestoration

PIXELS, DIM, HEADS, HEAD_DIM, AREA = 4096, 64, 3, 16, 64


def median_us(fns: Mapping[str, Callable[[], object]], calls: int = 100, rounds: int = 7) -> dict[str, float]:
    """Median microseconds per call of each function (`calls` calls timed together), the functions interleaved round
    by round after 10 warm-up calls each (`measuring.time_calls`)."""
    seconds = time_calls(fns, repeats=rounds, warmup=10, calls=calls).seconds
    return {name: statistics.median(t) * 1e6 for name, t in seconds.items()}


def piece_operations() -> dict[tuple[str, str], Callable[[], object]]:
    """(operator as the profiler names it, its first input's shape) -> the same call on fresh data."""
    x, h = torch.randn(PIXELS, DIM), torch.randn(PIXELS, 2 * DIM)
    weight, bias = torch.randn(DIM, 3 * DIM), torch.randn(3 * DIM)
    fc1, fc1_bias = torch.randn(DIM, 2 * DIM), torch.randn(2 * DIM)
    fc2, fc2_bias = torch.randn(2 * DIM, DIM), torch.randn(DIM)
    norm_weight, norm_bias = torch.randn(DIM), torch.randn(DIM)
    # q and k are the first columns of the qkv product, a strided view
    qk = torch.randn(PIXELS, 3 * DIM)[:, : 2 * HEADS * HEAD_DIM].view(PIXELS, 2 * HEADS, HEAD_DIM)
    logits = torch.randn(PIXELS // AREA, AREA, AREA)
    dw = torch.nn.Conv2d(80, 80, 3, 1, 1, groups=80).eval()
    band = torch.randn(1, 18, 256, 80).permute(0, 3, 1, 2)
    index = torch.randperm(4 * PIXELS)[:PIXELS]
    source = torch.randn(4 * PIXELS, DIM)
    return {
        ("aten::addmm", "[[192], [4096, 64], [64, 192], [], []]"): lambda: torch.addmm(bias, x, weight),
        ("aten::addmm", "[[128], [4096, 64], [64, 128], [], []]"): lambda: torch.addmm(fc1_bias, x, fc1),
        ("aten::addmm", "[[64], [4096, 128], [128, 64], [], []]"): lambda: torch.addmm(fc2_bias, h, fc2),
        ("aten::_softmax", "[[64, 64, 64], [], []]"): lambda: torch.softmax(logits, -1),
        ("aten::native_layer_norm", "[[4096, 64], [], [64], [64], []]"): lambda: F.layer_norm(
            x, (DIM,), norm_weight, norm_bias
        ),
        ("aten::gelu", "[[4096, 128], []]"): lambda: F.gelu(h),
        ("aten::linalg_vector_norm", "[[4096, 6, 16], [], [], [], []]"): lambda: torch.linalg.vector_norm(
            qk, dim=-1, keepdim=True
        ),
        ("aten::mkldnn_convolution", "[[1, 80, 18, 256], [80, 1, 3, 3], [80], [], [], [], []]"): lambda: dw(band),
        ("aten::index_select", "[[65536, 64], [], [4096]]"): lambda: source.index_select(0, index),
    }


def profiled_forwards(size: int, operations: dict[tuple[str, str], Callable[[], object]], rounds: int):
    """Profile one forward per round, with one round of the operations alone after each, so that both see the same
    state of a noisy machine. -> (forward seconds, {operation: [us per call in the forward]}, {operation: [us alone]},
    the last round's profile)."""
    torch.manual_seed(0)
    model = RamitForImageRestoration(RamitConfig(upscale=2)).eval()
    image = torch.rand(1, 3, size, size)
    seconds: list[float] = []
    inside: dict[tuple[str, str], list[float]] = {key: [] for key in operations}
    alone: dict[tuple[str, str], list[float]] = {key: [] for key in operations}
    with torch.inference_mode():
        for _ in range(2):
            model(pixel_values=image)
        for _ in range(rounds):
            seconds.append(timed(lambda: model(pixel_values=image))[0])
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                model(pixel_values=image)
            events = {(e.key, str(e.input_shapes)): e for e in prof.key_averages(group_by_input_shape=True)}
            for key in operations:
                if key in events:
                    # total, not self, time: addmm's copy of its bias into the output is a child operator
                    inside[key].append(events[key].cpu_time_total / events[key].count)
            by_itself = median_us({str(key): fn for key, fn in operations.items()}, rounds=1)
            for key in operations:
                alone[key].append(by_itself[str(key)])
    return statistics.median(seconds), inside, alone, prof


def attention_ways() -> dict[str, Callable[[], torch.Tensor]]:
    windows = PIXELS // AREA
    qkv = torch.randn(PIXELS, 3 * HEADS * HEAD_DIM)
    width = HEADS * HEAD_DIM
    q, k, v = (qkv[:, i * width : (i + 1) * width].view(PIXELS, HEADS, HEAD_DIM) for i in range(3))
    bias = torch.randn(1, HEADS, AREA, AREA)

    def per_head() -> torch.Tensor:
        out = qkv.new_empty(PIXELS, HEADS, HEAD_DIM)
        for head in range(HEADS):
            shape = (windows, AREA, HEAD_DIM)
            logits = torch.baddbmm(bias[0, head], q[:, head].view(shape), k[:, head].view(shape).transpose(1, 2))
            out[:, head] = torch.bmm(torch.softmax(logits, -1), v[:, head].view(shape)).view(PIXELS, HEAD_DIM)
        return out

    def heads_first(t: torch.Tensor) -> torch.Tensor:
        return t.view(windows, AREA, HEADS, HEAD_DIM).transpose(1, 2)

    def chain(qh: torch.Tensor, kh: torch.Tensor, vh: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(torch.softmax(torch.matmul(qh, kh.transpose(-1, -2)) + b, -1), vh)

    def four_d() -> torch.Tensor:
        out = chain(heads_first(q), heads_first(k), heads_first(v), bias)
        return out.transpose(1, 2).reshape(PIXELS, HEADS, HEAD_DIM)

    def sdpa() -> torch.Tensor:
        o = F.scaled_dot_product_attention(heads_first(q), heads_first(k), heads_first(v), attn_mask=bias, scale=1.0)
        return o.transpose(1, 2).reshape(PIXELS, HEADS, HEAD_DIM)

    def onednn_graph(bias: torch.Tensor) -> Callable[[], torch.Tensor]:
        qh, kh, vh = (heads_first(t).contiguous() for t in (q, k, v))
        torch.jit.enable_onednn_fusion(True)
        with torch.no_grad():
            fused = torch.jit.trace(chain, (qh, kh, vh, bias))
            for _ in range(3):  # the profiling runs after which TorchScript hands the chain to oneDNN Graph
                fused(qh, kh, vh, bias)

        def run() -> torch.Tensor:
            # the inputs made heads-first inside the timed call, as the other ways pay for their layouts too
            args = [heads_first(t).contiguous() for t in (q, k, v)]
            return fused(*args, bias).transpose(1, 2).reshape(PIXELS, HEADS, HEAD_DIM)

        return run

    return {
        "per head, batched products (banded path)": per_head,
        "one chain of 4-D products": four_d,
        "scaled_dot_product_attention": sdpa,
        "oneDNN Graph fusion (TorchScript), bias (1, heads, 64, 64)": onednn_graph(bias),
        # the same bias without its leading 1, broadcast over the windows just the same in eager PyTorch
        "oneDNN Graph fusion (TorchScript), bias (heads, 64, 64)": onednn_graph(bias[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--top", type=int, default=15, help="operators listed in the profile")
    parser.add_argument("--rounds", type=int, default=5, help="profiled forwards, each followed by the operations")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads")

    operations = piece_operations()
    seconds, inside, alone, prof = profiled_forwards(args.size, operations, args.rounds)
    averages = prof.key_averages()
    total = sum(event.self_cpu_time_total for event in averages)
    print(f"\nRAMiT x2, {args.size}x{args.size}, banded float32: {seconds * 1000:.0f} ms (median unprofiled forward)\n")
    print("| operator | self ms | calls | share |")
    print("|---|---|---|---|")
    for event in sorted(averages, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        share = event.self_cpu_time_total / total
        print(f"| {event.key} | {event.self_cpu_time_total / 1000:.1f} | {event.count} | {share:.1%} |")

    print("\n| operation (first input) | alone us | in the forward us/call | forward / alone |")
    print("|---|---|---|---|")
    for key in operations:
        label, alone_us = f"{key[0]} {key[1].split('],')[0]}]", statistics.median(alone[key])
        if not inside[key]:
            print(f"| {label} | {alone_us:.0f} | not in this forward | |")
            continue
        inside_us = statistics.median(inside[key])
        print(f"| {label} | {alone_us:.0f} | {inside_us:.0f} | {inside_us / alone_us:.2f} |")

    ways = attention_ways()
    with torch.no_grad():
        reference = next(iter(ways.values()))()
        attention_us = median_us(ways, calls=50)
        banded = next(iter(attention_us.values()))
        print("\n| window attention of one piece | us | vs banded | max abs diff |")
        print("|---|---|---|---|")
        for name, fn in ways.items():
            diff = (fn() - reference).abs().max().item()
            print(f"| {name} | {attention_us[name]:.0f} | {banded / attention_us[name]:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
