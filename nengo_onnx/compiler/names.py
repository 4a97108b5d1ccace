"""Names of a built model's objects, signals and ONNX ports: the one source of names.

Everything that shows a name (the ONNX graphs, ``sim.data``'s saved files,
summaries, exported models) takes it from a `Names` built once per compiled
program, so the same network always gets the same names, in any process:

1. Objects: the label, made of ``[A-Za-z0-9_]`` only; unlabelled objects are
   ``<type>_<n>``, numbered per type in build order (``ensemble_0``,
   ``connection_3``). ``Neurons`` are ``<ensemble>.neurons``. A repeated name
   gets a suffix, ``name, name_1, name_2`` (NengoDL's scheme), so two objects
   with one label still get two names. Probes are named among probes (their
   names show only in ``probe.*`` ports, so a probe may share its target's label).
2. Signals: ``<object>.<key>`` from ``model.sig`` (a connection's weights are
   ``conn.weights`` although nengo names the signal after its transform);
   a signal no object owns is named after nengo's name for it, with the objects
   in it replaced by their names, and memory addresses removed.
3. ONNX ports: ``<kind>.<name>``, where kind says what the port is (``input``,
   ``feed``, ``rand``, ``state``, ``state_out``, ``probe``, ``target``).

Every model-derived name contains a ``.``; the ONNX graph builder's own names
(``const``, ``matmul_3``) never do, so no label can collide with them.
"""

import re

from nengo.base import NengoObject
from nengo.connection import LearningRule
from nengo.ensemble import Neurons
from nengo.probe import Probe

#: memory addresses in nengo's default reprs (``<Ensemble (unlabeled) at 0x7f...>``)
_ADDRESS = re.compile(r"\s*at 0x[0-9a-fA-F]+|0x[0-9a-fA-F]+")


def strip_addresses(text):
    """``text`` without the memory addresses of nengo's reprs (which change per run)."""
    return _ADDRESS.sub("", str(text))


def sanitize(text, allow_dots=True):
    """A name made of ``[A-Za-z0-9_.]`` only (no dots unless allowed), never empty,
    never starting with a digit."""
    pattern = r"[^A-Za-z0-9_.]+" if allow_dots else r"[^A-Za-z0-9_]+"
    name = re.sub(pattern, "_", str(text)).strip("_") or "x"
    return f"_{name}" if name[0].isdigit() else name


class UniqueNames:
    """Hands out names, adding ``_1``, ``_2`` ... to repeats (NengoDL's scheme)."""

    def __init__(self):
        self.taken = set()

    def claim(self, name):
        candidate, n = name, 0
        while candidate in self.taken:
            n += 1
            candidate = f"{name}_{n}"
        self.taken.add(candidate)
        return candidate


def _named_objects(model):
    """The model's objects in build order (``model.sig``'s order, then probes)."""
    objs = [
        obj
        for obj in model.sig
        if isinstance(obj, (NengoObject, LearningRule)) and not isinstance(obj, Neurons)
    ]
    objs += [probe for probe in model.probes if probe not in objs]
    return objs


class Names:
    """Names of one built model's objects and signals (see the module docstring).

    Object names are fixed when the `Names` is made; signal names are fixed by
    `name_signals`, once the passes have produced the final operators (a merge
    pass packs signals into new bases, named after their first owner).
    """

    def __init__(self, model):
        self.model = model
        taken = {"objects": UniqueNames(), "probes": UniqueNames()}
        counters = {}
        self.objects = {}
        for obj in _named_objects(model):
            namespace = "probes" if isinstance(obj, Probe) else "objects"
            label = getattr(obj, "label", None)
            kind = type(obj).__name__.lower()
            if label:
                name = sanitize(label, allow_dots=False)
            else:
                n = counters[kind] = counters.get(kind, -1) + 1
                name = f"{kind}_{n}"
            self.objects[obj] = taken[namespace].claim(name)
        self.signals = {}
        self._signal_names = UniqueNames()
        # objects' reprs in nengo's signal names, longest first (one may contain another)
        self._reprs = sorted(
            ((str(obj), name) for obj, name in self.objects.items()),
            key=lambda item: -len(item[0]),
        )

    # -- objects --------------------------------------------------------------------------

    def object(self, obj):
        """The name of a Nengo object (``Neurons``: ``<ensemble>.neurons``)."""
        if isinstance(obj, Neurons):
            return f"{self.object(obj.ensemble)}.neurons"
        try:
            return self.objects[obj]
        except KeyError:
            raise KeyError(f"{obj} is not an object of this model") from None

    def param(self, obj, key):
        """The name of a parameter: ``<object>.<key>`` (``ens.encoders``)."""
        return f"{self.object(obj)}.{sanitize(key, allow_dots=False)}"

    # -- signals --------------------------------------------------------------------------

    def _owned_signals(self):
        """``(object, key, signal)`` of every signal ``model.sig`` files under an object."""
        for obj, sigs in self.model.sig.items():
            if isinstance(obj, (NengoObject, Neurons, LearningRule)):
                for key, sig in sigs.items():
                    if sig is not None and hasattr(sig, "base"):
                        yield obj, key, sig

    def name_signals(self, operators):
        """Name every base signal of ``operators`` (call once, after the passes)."""
        for obj, key, sig in self._owned_signals():
            if sig.base not in self.signals:
                self.signals[sig.base] = self._signal_names.claim(self.param(obj, key))
        for op in operators:
            for sig in op.all_signals:
                if sig.base not in self.signals:
                    self.signals[sig.base] = self._signal_names.claim(self._unowned_name(sig.base))

    def _unowned_name(self, sig):
        """nengo's name of a signal, with objects named by their names, no addresses."""
        text = str(sig.name)
        for obj_repr, name in self._reprs:
            text = text.replace(obj_repr, name)
        name = sanitize(strip_addresses(text))
        return name if "." in name else f"signal.{name}"

    def signal(self, base):
        """The name of a base signal (named by `name_signals`)."""
        try:
            return self.signals[base]
        except KeyError:
            raise KeyError(
                f"signal {base} was not named: it is not in the compiled operators"
            ) from None

    # -- ONNX ports -----------------------------------------------------------------------

    def input(self, node):
        """The graph input that feeds an input Node's output."""
        return f"input.{self.object(node)}"

    def feed(self, sig):
        """The graph input of a time-only operator that writes ``sig`` (before merging)."""
        for obj, key, owned in self._owned_signals():
            if owned is sig:
                return f"feed.{self.param(obj, key)}"
        return f"feed.{self._unowned_name(sig)}"

    def probe(self, probe):
        """The graph output with a probe's data."""
        return f"probe.{self.object(probe)}"

    def state(self, base):
        return f"state.{self.signal(base)}"

    def state_out(self, base):
        return f"state_out.{self.signal(base)}"

    def target(self, probe):
        """The training graph input with a probe's targets."""
        return f"target.{self.object(probe)}"


def port_kind(name):
    """``"input"``, ``"feed"``, ``"rand"``, ... : what a port name says it is."""
    return name.split(".", 1)[0]


def port_object(name):
    """The object or signal name in a port name (``input.stim`` -> ``stim``)."""
    return name.split(".", 1)[1]
