"""Benchmark nengo_onnx.Simulator against nengo.Simulator in the same run.

Networks: a Node(sin) feeding a chain of Ensembles of LIF
neurons (1-D, default synapses), probed at the end. Prints build time, compile
time and steps/s for both simulators, and their ratios, as a Markdown table.

    python tools/benchmark_simulator.py [--steps 1000] [--repeats 3] [--unroll K ...]
"""

import argparse
import time

import nengo
import numpy as np

import nengo_onnx


def chain(n_ensembles, n_neurons, seed=0):
    with nengo.Network(seed=seed) as net:
        node = nengo.Node(np.sin)
        prev = node
        for _ in range(n_ensembles):
            ens = nengo.Ensemble(n_neurons, 1)
            nengo.Connection(prev, ens)
            prev = ens
        net.probe = nengo.Probe(prev)
    return net


def measure(make_sim, net, n_steps, repeats):
    """Build (+compile) time, and the best steps/s over ``repeats`` runs."""
    start = time.perf_counter()
    sim = make_sim(net)
    build = time.perf_counter() - start
    best = 0.0
    with sim:
        sim.run_steps(min(n_steps, 100))  # warm up (first-call allocations)
        for _ in range(repeats):
            start = time.perf_counter()
            sim.run_steps(n_steps)
            best = max(best, n_steps / (time.perf_counter() - start))
    return build, best


def compile_time(net, unroll):
    """Time to build with nengo's builder and to compile to ONNX, separately."""
    from nengo.builder import Model  # noqa: PLC0415

    start = time.perf_counter()
    model = Model(dt=0.001)
    model.build(net)
    build = time.perf_counter() - start
    start = time.perf_counter()
    sim = nengo_onnx.Simulator(None, model=model, unroll_simulation=unroll, progress_bar=False)
    compiled = time.perf_counter() - start
    sim.close()
    return build, compiled


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--unroll", type=int, nargs="+", default=[10])
    args = parser.parse_args(argv)

    print("| network | simulator | build s | compile s | steps/s | ratio |")
    print("|---|---|---|---|---|---|")
    for label, (n_ens, n_neurons) in {"5 x 500": (5, 500), "20 x 1000": (20, 1000)}.items():
        net = chain(n_ens, n_neurons)
        ref_build, ref_rate = measure(
            lambda n: nengo.Simulator(n, progress_bar=False), net, args.steps, args.repeats
        )
        print(f"| {label} | nengo.Simulator | {ref_build:.2f} | - | {ref_rate:,.0f} | 1.00 |")
        for unroll in args.unroll:
            build, compiled = compile_time(net, unroll)
            _, rate = measure(
                lambda n, k=unroll: nengo_onnx.Simulator(
                    n, unroll_simulation=k, progress_bar=False
                ),
                net,
                args.steps,
                args.repeats,
            )
            print(
                f"| {label} | nengo_onnx K={unroll} | {build:.2f} | {compiled:.2f} | "
                f"{rate:,.0f} | {rate / ref_rate:.2f} |"
            )


if __name__ == "__main__":
    main()
