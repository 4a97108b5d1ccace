"""Run the differential test machine (issue 8) on a long budget of random networks.

    python tools/differential.py --budget 2000 [--seed 0] [--properties a,b,c,d,e]
                                 [--jobs 2] [--include-known] [--json out.json]

Unlike the CI tests (which stop at the first failure), this keeps going: every
failure is classified by kind (the property, the exception type and its first
line with numbers and names blanked out), and the first network of each kind is
shrunk (greedily, on the plain-data description: fewer probes, connections,
objects, steps...) to a minimal repro, printed at the end with a summary table.

Each network is checked with every selected property that applies: a general
network with (a), (c), (d), (e); every third network is a trainable one, checked
with (b) (its objective and truncation drawn too).
"""

import argparse
import collections
import json
import multiprocessing
import os
import re
import sys
import time
import traceback
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import hypothesis  # noqa: E402
import hypothesis.strategies as st  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402

from tests.differential import properties, strategies  # noqa: E402

GENERAL = ("a", "c", "d", "e")


def checks_for(props, include_known):
    """``{property: check(spec, draw)}``: each check draws its own extra choices."""

    def a(spec, extra):
        properties.check_matches_nengo(spec, include_known=include_known)

    def b(spec, extra):
        properties.check_gradients(
            spec,
            objective=extra["objective"],
            truncation=extra["truncation"],
            include_known=include_known,
        )

    def c(spec, extra):
        properties.check_exports(spec)

    def d(spec, extra):
        properties.check_round_trips(spec, include_known=include_known)

    def e(spec, extra):
        properties.check_interrupted(
            spec, with_input=extra["with_input"], include_known=include_known
        )

    table = dict(a=a, b=b, c=c, d=d, e=e)
    return {p: table[p] for p in props}


def extras():
    """The choices a property draws besides the network."""
    return st.fixed_dictionaries(
        dict(
            objective=st.sampled_from(properties.OBJECTIVES),
            truncation=st.sampled_from([None, 1, 2, 3, 100]),
            with_input=st.booleans(),
        )
    )


def kind_of(prop, err):
    """A failure's kind: property, exception type, first line without specifics."""
    line = str(err).strip().splitlines()[0] if str(err).strip() else ""
    line = re.sub(r"<.*>", "<obj>", line)  # Nengo objects' reprs
    line = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", line)
    line = re.sub(r"\b(probe|conn|ens|node|mid)\d+\b", r"\1N", line)
    line = re.sub(r"0x[0-9a-f]+|[-+]?\d+(\.\d+)?(e[-+]?\d+)?", "N", line)
    return f"({prop}) {type(err).__name__}: {line[:110]}"


def run_one(check, spec, extra):
    """``None`` if the check passes or nengo rejects the network, else the error."""
    try:
        check(spec, extra)
    except properties.NengoRejects:
        return "rejected"
    except Exception as err:  # noqa: BLE001  (every failure is a finding: classify it)
        return err
    return None


# --- greedy shrinking on the plain data ---


def _drop(spec, name):
    """``spec`` without the record ``name`` and everything that refers to it."""
    gone = {name}
    changed = True
    while changed:
        changed = False
        for rec in (*spec.objects, *spec.connections, *spec.probes):
            if rec.name not in gone and any(
                re.search(rf"\b{re.escape(g)}\b", rec.source) for g in gone
            ):
                gone.add(rec.name)
                changed = True
    return replace(
        spec,
        objects=tuple(o for o in spec.objects if o.name not in gone),
        connections=tuple(c for c in spec.connections if c.name not in gone),
        probes=tuple(p for p in spec.probes if p.name not in gone),
    )


def candidates(spec):
    """Smaller variants of ``spec``, simplest changes first."""
    for rec in (*spec.probes, *spec.connections, *spec.objects):
        smaller = _drop(spec, rec.name)
        if smaller.probes:
            yield smaller
    for n in sorted({1, 2, 3, spec.n_steps // 2, spec.n_steps - 1}):
        if 0 < n < spec.n_steps:
            yield replace(spec, n_steps=n, split=min(spec.split, n - 1))
    if spec.split:
        yield replace(spec, split=0)
    if spec.minibatch_size is not None:
        yield replace(spec, minibatch_size=None)
    if spec.unroll != 1:
        yield replace(spec, unroll=1)
    if not spec.optimize:
        yield replace(spec, optimize=True)
    if spec.extra:
        yield replace(spec, extra=())
    for field_name in ("objects", "probes"):
        for i, rec in enumerate(getattr(spec, field_name)):
            source = re.sub(r", label='[^']*'", "", rec.source)
            source = re.sub(r", synapse=[^,)]+(\([^)]*\))?", "", source)
            if source != rec.source and "label='const'" not in rec.source:
                records = list(getattr(spec, field_name))
                records[i] = replace(rec, source=source)
                yield replace(spec, **{field_name: tuple(records)})


def shrink(check, spec, extra, kind, prop, budget=30, deadline=None):
    """Greedily shrink ``spec`` while it still fails with ``kind`` (at most ``budget``
    tries, and not past the ``deadline`` time)."""
    tries = 0
    improved = True
    while improved and tries < budget:
        improved = False
        for smaller in candidates(spec):
            tries += 1
            err = run_one(check, smaller, extra)
            if err not in (None, "rejected") and kind_of(prop, err) == kind:
                spec, improved = smaller, True
                break
            if tries >= budget or deadline and time.time() > deadline:
                return spec
    return spec


# --- the run ---


def worker(args):
    """Run ``budget`` networks with hypothesis seed ``seed``; returns the findings."""
    budget, seed, props, include_known, position = args
    import nengo

    nengo.rc.set("decoder_cache", "enabled", "False")
    checks = checks_for(props, include_known)
    general = [p for p in props if p in GENERAL]
    counts = collections.Counter()
    failures = {}  # kind -> (prop, spec, extra, traceback, count)
    start = time.time()

    @hypothesis.seed(seed)
    @settings(
        max_examples=budget,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[hypothesis.Phase.generate],
    )
    @given(data=st.data())
    def explore(data):
        # one network in three is a trainable one, for (b)
        trainable = "b" in props and (not general or data.draw(st.integers(0, 2)) == 2)
        spec = data.draw(
            strategies.networks(
                trainable=trainable, include_known=include_known, max_steps=8 if trainable else 24
            )
        )
        extra = data.draw(extras())
        selected = ["b"] if trainable else general
        rejected = False
        for prop in selected:
            err = run_one(checks[prop], spec, extra)
            if err == "rejected":
                rejected = True
                break
            counts[f"checked {prop}"] += 1
            if err is not None:
                kind = kind_of(prop, err)
                counts[f"failed {prop}"] += 1
                if kind in failures:
                    failures[kind][-1] += 1
                else:
                    tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))[
                        -1500:
                    ]
                    failures[kind] = [prop, spec, extra, tb, 1]
        if rejected:
            counts["rejected by nengo"] += 1
            hypothesis.assume(False)
        counts["networks"] += 1
        done = counts["networks"]
        if position is not None and (done % 5 == 0 or done == budget):
            rate = done / (time.time() - start)
            print(
                f"[job {position}] {done}/{budget} networks, {rate:.2f}/s, "
                f"{sum(f[-1] for f in failures.values())} failures in "
                f"{len(failures)} kinds",
                file=sys.stderr,
                flush=True,
            )

    explore()
    results = {}
    # shrinking gets at most a third of the time the run took
    deadline = time.time() + (time.time() - start) / 3 + 30
    for kind, (prop, spec, extra, tb, count) in failures.items():
        small = shrink(checks[prop], spec, extra, kind, prop, deadline=deadline)
        results[kind] = dict(
            prop=prop,
            count=count,
            traceback=tb,
            extra=extra,
            repro=small.repro(_check_name(prop)),
            spec=repr(small),
            size=len(small.code()),
        )
    return dict(counts=dict(counts), failures=results, seconds=time.time() - start)


def _check_name(prop):
    return dict(
        a="check_matches_nengo",
        b="check_gradients",
        c="check_exports",
        d="check_round_trips",
        e="check_interrupted",
    )[prop]


def merge(results):
    """Sum the counts and failures of the jobs (keeping the smallest repro)."""
    counts = collections.Counter()
    failures = {}
    for res in results:
        counts.update(res["counts"])
        for kind, fail in res["failures"].items():
            if kind not in failures:
                failures[kind] = dict(fail)
            else:
                failures[kind]["count"] += fail["count"]
                if fail["size"] < failures[kind]["size"]:
                    failures[kind].update({k: v for k, v in fail.items() if k != "count"})
    return counts, failures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, required=True, help="networks to check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--properties", default="a,b,c,d,e")
    parser.add_argument("--jobs", type=int, default=1, help="processes (split the budget)")
    parser.add_argument(
        "--include-known", action="store_true", help="also generate what open issue 8 items break"
    )
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    props = [p.strip() for p in args.properties.split(",") if p.strip()]
    shares = [args.budget // args.jobs + (i < args.budget % args.jobs) for i in range(args.jobs)]
    jobs = [(n, args.seed + i, props, args.include_known, i) for i, n in enumerate(shares)]
    start = time.time()
    if args.jobs == 1:
        results = [worker(jobs[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            results = pool.map(worker, jobs)
    counts, failures = merge(results)
    elapsed = time.time() - start
    print(
        f"\n{counts['networks']} networks in {elapsed:.0f} s "
        f"({counts['rejected by nengo']} rejected by nengo.Simulator itself and "
        f"not counted); properties {','.join(props)}"
        f"{' (known open items included)' if args.include_known else ''}"
    )
    for prop in props:
        print(f"  ({prop}) checked {counts[f'checked {prop}']}, failed {counts[f'failed {prop}']}")
    print(f"\n{len(failures)} kinds of failure")
    for kind, fail in sorted(failures.items(), key=lambda kv: -kv[1]["count"]):
        print(
            f"\n=== {fail['count']}x {kind}\n--- minimal repro:\n{fail['repro']}\n"
            f"--- traceback (end):\n{fail['traceback']}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                dict(counts=counts, seconds=elapsed, args=vars(args), failures=failures),
                f,
                indent=1,
                default=str,
            )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
